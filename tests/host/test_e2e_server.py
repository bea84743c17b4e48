"""End-to-end: a real ComfyUI server (``COMFYUI_DIR``) with the pack in custom_nodes runs every workflow.

The server runs in a throw-away ``--base-directory`` (nothing is written into the host tree), with the
pack symlinked into its ``custom_nodes``; it is stopped by its PID. Workflows are converted to API
format by the test and their official model files swapped for tiny ones (see ``tests/_e2e.py``).
"""
import json

import numpy as np
import pytest
from PIL import Image

from _e2e import (PACK_FOLDER, running_server, load_defs, write_tiny_models,
                  write_tiny_dloral, write_tiny_families, write_tiny_scan, SCAN_PX, tiny_prompt, run_prompt, STEPS, SIZE, FRAMES, VIDEO_FRAMES, VIDEO_SIZE)
from _testenv import REPO
from _workflows import template_path

pytestmark = [pytest.mark.host, pytest.mark.slow]
WF_DIR = REPO / "example_workflows"


@pytest.fixture(scope="module")
def server(comfy_dir):
    def prepare(base):
        for write in (write_tiny_models, write_tiny_dloral, write_tiny_families, write_tiny_scan):
            write(base)
    with running_server(comfy_dir, prepare) as srv:
        yield srv


@pytest.fixture(scope="module")
def defs():
    return load_defs()


def _wf(name):
    path = template_path(name)
    assert path.is_file(), f"{path.name} ships with the pack and is missing (scripts/make_workflows.py)"
    return json.loads(path.read_text())


def _run_ok(server, prompt):
    status, body, events, hist = run_prompt(server, prompt)
    assert status == 200, f"/prompt refused: {json.dumps(body)[:2000]}"
    assert hist is not None, f"no history; server log:\n{server.log_tail()}"
    errs = [e for e in events if e.get("type") == "execution_error"]
    assert not errs and hist["status"].get("status_str") == "success", \
        f"{json.dumps(errs)[:3000]}\n{server.log_tail()}"
    return events, hist


def _saved_files(server, hist, key="images"):
    files = []
    for out in hist["outputs"].values():
        for item in out.get(key, []):
            p = server.base / (item.get("type") or "output") / item.get("subfolder", "") / item["filename"]
            files.append(p)
    return files


def _check_webp(path, frames):
    assert path.is_file(), path
    with Image.open(path) as im:
        assert im.format == "WEBP"
        assert getattr(im, "n_frames", 1) == frames
        assert im.size == (SIZE, SIZE)
        spreads = []
        for k in range(frames):
            im.seek(k)
            ext = im.convert("RGB").getextrema()
            spreads.append(max(hi - lo for lo, hi in ext))
        assert max(spreads) > 0, "flat frames (NaN or constant output)"


def _reports(events):
    return [e["data"] for e in events if e.get("type") == "atelier.magcache.report"]


# -- the server side of the pack ---------------------------------------------------------------------
def test_snapshot_matches_live_server(server, defs):
    """tests/data/node_defs.json (used by the core tests) is what this server's /object_info serves,
    every pack node in both directions, field by field (the comparison of scripts/dump_node_defs.py)."""
    import sys
    sys.path.insert(0, str(REPO / "scripts"))
    from dump_node_defs import diff_defs, normalize
    live = {k: normalize(v) for k, v in server.get_json("/object_info").items()}
    version = server.get_json("/system_stats")["system"].get("comfyui_version")
    snap_version = json.loads((REPO / "tests" / "data" / "node_defs.json").read_text())["comfyui_version"]
    problems = diff_defs(defs, live, same_host_version=version == snap_version)
    assert not problems, "node_defs.json differs from the live server (regenerate it: " \
        "scripts/dump_node_defs.py):\n" + "\n".join(problems)


def test_templates_and_extension_are_served(server):
    from urllib.parse import quote
    listing = server.get_json("/api/workflow_templates")
    names = sorted(p.stem for p in WF_DIR.glob("*.json"))
    assert sorted(listing.get(PACK_FOLDER, [])) == names
    for n in names:   # the frontends fetch <name>.json and show <name>.jpg from the same route
        got = server.get_json(f"/api/workflow_templates/{PACK_FOLDER}/{quote(n)}.json")
        assert got == json.loads((WF_DIR / f"{n}.json").read_text())
        status, body = server.request(f"/api/workflow_templates/{PACK_FOLDER}/{quote(n)}.jpg")
        assert status == 200 and body == (WF_DIR / f"{n}.jpg").read_bytes(), n
    exts = server.get_json("/extensions")
    assert f"/extensions/{PACK_FOLDER}/js/atelier.js" in exts
    status, body = server.request(f"/extensions/{PACK_FOLDER}/js/atelier.js")
    assert status == 200 and b"registerExtension" in body


def test_schedule_route(server):
    s = server.get_json("/api/atelier/magcache/schedule?preset=wan2.1_t2v_1.3B&steps=50&thresh=0.12&k=2"
                        "&retention=0.2")
    assert s["total_calls"] == 100 and 0 < s["computed_calls"] < 100
    assert all(0 <= i < 50 for i in s["cond_skipped"] + s["uncond_skipped"])
    status, body = server.request("/api/atelier/magcache/schedule?thresh=abc")
    assert status == 400 and b"error" in body


def test_schedule_route_reads_the_family_from_the_loader_file(server):
    """The step strip's plan before a first run on a family other than Wan: 'auto' with the loader's file (what the
    frontend sends then) gives that family's plan, the host's detection of the file's header naming the family;
    the same plan as with the family the node reports after a run."""
    from _e2e import TINY_FAMILIES
    q = "/api/atelier/magcache/schedule?preset=auto&steps=8&thresh=0.24&k=6&retention=0.2"
    for preset, unet, _ in TINY_FAMILIES.values():   # these tiny families are named as their MagCache presets
        s = server.get_json(f"{q}&unet_name={unet}")
        assert s["preset"] == preset and s["detected"] and s["steps"] == 8, (unet, s)
        assert s == server.get_json(f"{q}&family={preset}"), unet


# -- each workflow runs to completion -------------------------------------------------------------------
def test_magcache_t2v(server, defs):
    events, hist = _run_ok(server, tiny_prompt(_wf("magcache_wan21_t2v"), defs))
    files = _saved_files(server, hist)
    assert len(files) == 1
    _check_webp(files[0], FRAMES)
    reps = _reports(events)
    assert len(reps) == 1, "one atelier.magcache.report event per sampling run"
    r = reps[0]
    mc_id = next(k for k, v in tiny_prompt(_wf("magcache_wan21_t2v"), defs).items()
                 if v["class_type"] == "AtelierMagCacheWan")
    assert str(r["node"]) == mc_id
    assert set(r["branches"]) == {"cond", "uncond"}
    for marks in r["branches"].values():
        assert len(marks) == STEPS and set(marks) <= {"C", "S"}
    computed = sum(m == "C" for marks in r["branches"].values() for m in marks)
    assert r["computed_calls"] == computed and r["total_calls"] == 2 * STEPS
    assert r["time_saved_s"] >= 0 and r["summary"].startswith("MagCache")


def _family_output(server, hist, video):
    """The one output of a family workflow as uint8 RGB frames [F, H, W, 3] (an image: one frame), checked: the
    test's size, every frame of a clip, not flat."""
    files = _saved_files(server, hist)
    assert len(files) == 1
    if video:
        _check_webp(files[0], FRAMES)
    with Image.open(files[0]) as im:
        frames = []
        for k in range(getattr(im, "n_frames", 1)):
            im.seek(k)
            frames.append(np.asarray(im.convert("RGB"), dtype=np.int16))
    out = np.stack(frames)
    assert out.shape[1:] == (SIZE, SIZE, 3) and np.ptp(out) > 0, (out.shape, "flat output")
    return out


def _check_family_report(pack, events, prompt, preset, branches):
    """One MagCache report whose skips per branch are the core's plan for the workflow's settings at the sampler's
    steps, under the family's own rule and curve (auto)."""
    (r,) = _reports(events)
    mc = next(v["inputs"] for v in prompt.values() if v["class_type"] == "AtelierMagCacheWan")
    steps = next(v["inputs"]["steps"] for v in prompt.values() if v["class_type"] == "KSampler")
    sch = pack.magcache.resolve(preset, steps=steps, thresh=mc["thresh"], k=mc["k"], retention=mc["retention"]).plan()
    assert r["preset"] == preset and r["curve_source"].startswith(f"preset {preset} (auto"), r
    if preset == "flux":
        assert "no reference latent" in r["curve_source"], r
    assert tuple(r["branches"]) == branches and all(len(m) == steps for m in r["branches"].values())
    for name, want in zip(branches, (sch.cond_skipped, sch.uncond_skipped)):
        assert [i for i, x in enumerate(r["branches"][name]) if x == "S"] == list(want), name
    assert sch.cond_skipped, "the workflow's setting skips at the test's step count"
    assert r["computed_calls"] == (sch.computed_calls if len(branches) == 2 else steps - len(sch.cond_skipped))
    assert r["total_calls"] == steps * len(branches)


@pytest.mark.parametrize("slug,preset,branches", [("magcache_flux", "flux", ("cond",)),
                                                   ("magcache_qwen_image", "qwen_image", ("cond", "uncond")),
                                                   ("magcache_hunyuan_video", "hunyuan_video", ("cond",))])
def test_magcache_family_workflows(server, defs, pack, slug, preset, branches):
    """The FLUX.1-dev (DualCLIPLoader, FluxGuidance, cfg 1), Qwen-Image (CLIPLoader, ModelSamplingAuraFlow,
    cfg 2.5) and HunyuanVideo (DualCLIPLoader, ModelSamplingSD3, FluxGuidance, cfg 1, a clip) + MagCache workflows
    on the tiny models: one image (clip), one report whose skips per branch are the core's plan for the workflow's
    settings at the sampler's steps, under the family's own rule and curve (auto)."""
    prompt = tiny_prompt(_wf(slug), defs)
    events, hist = _run_ok(server, prompt)
    _family_output(server, hist, video=preset == "hunyuan_video")
    _check_family_report(pack, events, prompt, preset, branches)


def test_magcache_compare(server, defs):
    events, hist = _run_ok(server, tiny_prompt(_wf("magcache_compare"), defs))
    files = _saved_files(server, hist)
    assert len(files) == 2
    for f in files:
        _check_webp(f, FRAMES)
    texts = [t for out in hist["outputs"].values() for t in out.get("text", [])]
    if texts:   # PreviewAny shows the PSNR/SSIM table
        assert any("psnr" in t for t in texts)


def test_magcache_calibrate(server, defs):
    events, hist = _run_ok(server, tiny_prompt(_wf("magcache_calibrate"), defs))
    for f in _saved_files(server, hist):
        _check_webp(f, FRAMES)
    saved = server.base / "output" / "atelier_magcache" / "my_wan_model_00001.json"   # numbered, never overwritten
    assert saved.is_file()
    curve = json.loads(saved.read_text())
    assert curve, "empty calibration curve"
    assert len(_reports(events)) == 1   # the MagCache sampler that uses the new curve


@pytest.mark.parametrize("name", ["nag_cfg1_fewstep", "nag_magcache", "nag_wan22", "magcache_wan22_a14b"])
def test_nag_workflows(server, defs, name):
    """The Wan workflows with NAG and/or MagCache (Wan2.2 A14B: two experts, each its own KSamplerAdvanced segment,
    both tiny Wan files here): one clip of every frame; one MagCache report per MagCache node."""
    prompt = tiny_prompt(_wf(name), defs)
    events, hist = _run_ok(server, prompt)
    files = _saved_files(server, hist)
    assert len(files) == 1
    _check_webp(files[0], FRAMES)
    n_mc = sum(v["class_type"] == "AtelierMagCacheWan" for v in prompt.values())
    reports = _reports(events)
    assert len(reports) == n_mc
    if name == "magcache_wan22_a14b":   # each expert reports its own segment of the one 20-step schedule
        segments = sorted((v["inputs"]["start_at_step"], min(v["inputs"]["end_at_step"], v["inputs"]["steps"]))
                          for v in prompt.values() if v["class_type"] == "KSamplerAdvanced")
        assert [r["first_step"] for r in reports] == [first for first, _ in segments]
        for r, (first, last) in zip(reports, segments):
            assert r["total_calls"] == 2 * (last - first), r
            assert all(len(m) == last - first and "." not in m for m in r["branches"].values()), r["branches"]


@pytest.mark.parametrize("name", ["nag_flux_cfg1", "nag_qwen_image", "nag_hunyuan_magcache"])
def test_nag_family_workflows(server, defs, pack, name):
    """Flux (FluxGuidance, cfg 1), Qwen-Image (Lightning LoRA slot, cfg 1) and HunyuanVideo (NAG then MagCache,
    cfg 1, a clip) + NAG on the tiny models: one image (clip), and the NAG node changes it (the same prompt with the
    NAG node bypassed gives another output); with MagCache, its one report is the core's plan in both runs."""
    prompt = tiny_prompt(_wf(name), defs)
    nag_id = next(k for k, v in prompt.items() if v["class_type"] == "AtelierNAGWan")
    bypassed = json.loads(json.dumps(prompt))
    upstream = bypassed.pop(nag_id)["inputs"]["model"]
    for node in bypassed.values():
        if node["inputs"].get("model") == [nag_id, 0]:
            node["inputs"]["model"] = upstream
    video = name == "nag_hunyuan_magcache"
    outs = []
    for p in (prompt, bypassed):
        events, hist = _run_ok(server, p)
        outs.append(_family_output(server, hist, video))
        if video:
            _check_family_report(pack, events, p, "hunyuan_video", ("cond",))
    assert np.abs(outs[0] - outs[1]).max() > 0, "the NAG node changed nothing"


def test_dloral_video_upscale(server, defs):
    """Load video -> DLoRAL x4 (VIDEO node) -> save video: every frame out (frame 0 included), 4x the size,
    the clip's frame rate and its sound kept."""
    import av
    events, hist = _run_ok(server, tiny_prompt(_wf("dloral_video_upscale"), defs))
    files = _saved_files(server, hist)
    assert len(files) == 1 and files[0].is_file(), hist["outputs"]
    with av.open(str(files[0])) as c:
        assert c.streams.video[0].average_rate == 8 and len(c.streams.audio) == 1
        assert (c.streams.audio[0].sample_rate, c.streams.audio[0].channels) == (48000, 2)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == VIDEO_FRAMES
    assert frames[0].shape == (4 * VIDEO_SIZE, 4 * VIDEO_SIZE, 3)
    assert max(int(f.max()) - int(f.min()) for f in frames) > 0


@pytest.mark.parametrize("name", ["restoration_sample", "restoration_scan_to_print"])
def test_restoration_workflows(server, defs, name):
    """Scan (or bundled sample) -> print files and record: files exist and read back at 600 dpi."""
    import tifffile
    events, hist = _run_ok(server, tiny_prompt(_wf(name), defs))
    out = server.base / "output" / "atelier_restoration"
    prints = sorted(out.glob("print_*"))  # a new numbered folder per run (never overwritten)
    assert prints and not sorted(out.glob(".*")), sorted(p.name for p in out.iterdir())
    tifs = sorted(prints[-1].glob("*.tif*"))
    pdfs = sorted(prints[-1].glob("*.pdf"))
    assert len(tifs) >= 2 and pdfs, sorted(p.name for p in prints[-1].iterdir())
    for t in tifs:
        with tifffile.TiffFile(t) as f:
            page = f.pages[0]
            xres = page.tags["XResolution"].value
            assert abs(xres[0] / xres[1] - 600) < 1e-6, (t.name, xres)
            assert page.shape[0] >= SCAN_PX and page.shape[1] >= SCAN_PX   # 1:1 plus margins
    manifests = sorted(out.glob("record_*/manifest.json"))
    assert manifests, "no manifest.json"
    m = json.loads(manifests[-1].read_text())
    assert m, "empty manifest"
    assert (manifests[-1].parent / "index.html").is_file(), "no HTML record"
    previews = [i for o in hist["outputs"].values() for i in o.get("images", [])]
    files = [p for p in _saved_files(server, hist) if p.is_file()]
    assert len(previews) >= 5 and len(files) == len(previews), (len(previews), len(files))


# -- bad inputs get the server's validation error, not a crash ---------------------------------------
def _node_id(api, t):
    return next(k for k, v in api.items() if v["class_type"] == t)


def test_bad_inputs_return_validation_errors(server, defs):
    wf = _wf("magcache_wan21_t2v")
    api = tiny_prompt(wf, defs)
    mc = _node_id(api, "AtelierMagCacheWan")
    api[mc]["inputs"]["thresh"] = 5.0
    status, body = server.queue(api)
    assert status == 400 and mc in body.get("node_errors", {}), body
    assert "thresh" in json.dumps(body["node_errors"][mc])

    api = tiny_prompt(wf, defs)
    api[_node_id(api, "AtelierMagCacheWan")]["inputs"]["preset"] = "wan9_nope"
    status, body = server.queue(api)
    assert status == 400 and "preset" in json.dumps(body)

    api = tiny_prompt(wf, defs)
    del api[_node_id(api, "KSampler")]["inputs"]["model"]
    status, body = server.queue(api)
    assert status == 400 and "model" in json.dumps(body)

    api = tiny_prompt(wf, defs)
    api[mc]["class_type"] = "AtelierNoSuchNode"
    status, body = server.queue(api)
    assert status == 400
    # the server still works afterwards
    assert server.get_json("/system_stats")["system"]


def test_restoration_bad_inputs_return_validation_errors(server, defs):
    """A bad ground colour and a scan outside the input folder come back as validation errors naming the input."""
    wf = _wf("restoration_scan_to_print")
    api = tiny_prompt(wf, defs)
    det = _node_id(api, "AtelierDamageDetect")
    api[det]["inputs"]["ground_color"] = "0.8,0.7"
    status, body = server.queue(api)
    assert status == 400 and det in body.get("node_errors", {}), body
    assert "ground_color" in json.dumps(body["node_errors"][det])
    api = tiny_prompt(wf, defs)
    ls = _node_id(api, "AtelierRestorationLoadScan")
    api[ls]["inputs"]["path"] = "../../etc/passwd"
    status, body = server.queue(api)
    assert status == 400 and "not a file of the input folder" in json.dumps(body.get("node_errors", {}).get(ls))
    assert server.get_json("/system_stats")["system"]


def test_missing_model_file_is_a_validation_error(server, defs):
    """A model file that is not installed: the server names the input; it stays up."""
    api = tiny_prompt(_wf("magcache_wan21_t2v"), defs)
    api[_node_id(api, "UNETLoader")]["inputs"]["unet_name"] = "no_such_file.safetensors"
    status, body = server.queue(api)
    assert status == 400 and "unet_name" in json.dumps(body)
    assert server.get_json("/system_stats")["system"]


# -- every setting of every pack node, through the host's real validation (an API prompt to the server) -----
def test_every_pack_input_is_validated_by_the_server(server, defs):
    """Each numeric and choice input of each pack node, below its min, above its max, of a wrong type, not an
    option, or (required) missing: the server refuses the prompt (400) with an error for that node naming the
    input, and nothing runs (the queue and the history stay as they were). The host skips its own min/max
    and option checks for the inputs a node's ``validate_inputs`` names, so this is what proves the pack's
    validators enforce the settings tables."""
    from _walk import cases, names_input, pack_prompts
    info = server.get_json("/object_info")
    is_pack_id = lambda k: k.startswith("Atelier") and not k.startswith("AtelierE2E")   # noqa: E731
    prompts = pack_prompts(defs, info, is_pack_id)
    assert set(prompts) == {k for k in info if is_pack_id(k)}, \
        sorted({k for k in info if is_pack_id(k)} - set(prompts))   # every pack node is walked
    history = len(server.get_json("/history"))
    failures, n = [], 0
    for t, (api, nid) in sorted(prompts.items()):
        for name, what, prompt in cases(api, nid, info):
            n += 1
            status, body = server.queue(prompt)
            if status != 400 or not names_input(body.get("node_errors", {}), nid, name):
                failures.append(f"{t}.{name} {what}: {status} {json.dumps(body)[:400]}")
    assert n > 150, n
    assert not failures, f"{len(failures)} of {n} bad values were not refused naming the input:\n" + \
        "\n".join(failures[:40])
    q = server.get_json("/queue")
    assert not q["queue_running"] and not q["queue_pending"] and len(server.get_json("/history")) == history


def test_isolated_chain_of_each_pack_node_runs_valid(server, defs):
    """The walk's prompts are sound: each pack node's isolated chain with its own values passes validation
    (so a refusal in the walk is due to the one bad value). Checked by validation only: a prompt whose
    outputs are all valid is queued (200); it is then removed from the queue before it runs far."""
    from _walk import isolate, pack_prompts
    info = server.get_json("/object_info")
    prompts = pack_prompts(defs, info, lambda k: k.startswith("Atelier") and not k.startswith("AtelierE2E"))
    refused = []
    for t, (api, nid) in sorted(prompts.items()):
        status, body = server.queue(isolate(api, nid, info))
        if status != 200:
            refused.append(f"{t}: {json.dumps(body)[:300]}")
    server.request("/queue", {"clear": True})
    server.request("/interrupt", {})
    assert not refused, "\n".join(refused)
