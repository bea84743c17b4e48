"""Write tests/data/node_defs.json: the node definitions the workflow checks read without a host.

Regenerate it (after any change to a node's id, inputs, outputs or texts) with the v0.8.0 tree and
its own venv, from the repository root:

    COMFYUI_DIR=.hosts/ComfyUI-v0.8.0 .venv-hosts/ComfyUI-v0.8.0-*/bin/python scripts/dump_node_defs.py

(any ComfyUI tree and a Python that imports it will do; ``--out PATH`` writes elsewhere,
``--check`` compares with the snapshot instead of writing and exits 1 listing the differences).

How the definitions are made, in one process and without a server:

* the host's built-in nodes are registered (``nodes.init_extra_nodes`` without custom nodes);
* the pack is registered by the host's own loader, ``nodes.load_custom_node(<repo>)``, exactly as
  ComfyUI loads a custom node: a ``NODE_CLASS_MAPPINGS`` of V1 or V3 classes, or a V3
  ``comfy_entrypoint``. The pack's nodes are the ids that call added, whatever their names;
* each definition is what ``/object_info`` serves: the host's own ``node_info`` from ``server.py``
  (V3 classes: the schema's ``GET_NODE_INFO_V1``; V1 classes: ``INPUT_TYPES`` & co);
* model folders and the input folder point at a throw-away folder with one probe file each, so
  combos that list files come out as ``[[], {..., "atelier_file_list": True}]`` (install-dependent).

The snapshot keeps every pack node plus the host nodes the example workflows use (``HOST_NODES``).
``diff_defs`` (pure Python) compares two snapshots field by field in both directions; the host tier
(``tests/host/test_node_defs_host.py``, ``tests/host/test_e2e_server.py``) calls it.
"""
import argparse
import asyncio
import inspect
import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "node_defs.json"

# Host nodes the example workflows may use (present in ComfyUI v0.3.64 and v0.8.0).
HOST_NODES = [
    "UNETLoader", "CLIPLoader", "VAELoader", "CheckpointLoaderSimple", "LoraLoaderModelOnly",
    "CLIPTextEncode", "EmptyHunyuanLatentVideo", "ModelSamplingSD3", "KSampler", "KSamplerAdvanced",
    "VAEDecode", "VAEEncode", "SaveAnimatedWEBP", "SaveWEBM", "SaveImage", "PreviewImage", "LoadImage",
    "LoadVideo", "GetVideoComponents", "CreateVideo", "SaveVideo", "ImageScale", "ImageFromBatch", "PreviewAny",
    # MagCache and NAG family workflows (FLUX, Qwen-Image, HunyuanVideo)
    "DualCLIPLoader", "FluxGuidance", "EmptySD3LatentImage", "ModelSamplingAuraFlow",
]
FIELDS = ("name", "display_name", "category", "description", "input", "input_order", "output",
          "output_is_list", "output_name", "output_tooltips", "output_node", "deprecated", "experimental")

PROBE = "atelier_probe_file"
PROBE_DIRS = ["models/" + d for d in ("diffusion_models", "unet", "vae", "checkpoints", "text_encoders", "clip",
                                      "loras", "dloral", "upscale_models", "clip_vision")] + ["input"]


def add_probes(base):
    """One dummy file per model/input folder, so file-list combos can be told from fixed combos."""
    for d in PROBE_DIRS:
        (base / d).mkdir(parents=True, exist_ok=True)
        for ext in (".safetensors", ".pkl", ".mp4", ".png"):
            (base / d / (PROBE + ext)).write_bytes(b"")


def mark_file_lists(defn):
    """Combos listing files become ``[[], {..., "atelier_file_list": True}]`` (install-dependent)."""
    for section in defn.get("input", {}).values():
        for name, spec in section.items():
            opts = spec[0] if isinstance(spec[0], list) else (spec[1].get("options") if len(spec) > 1 and
                                                              isinstance(spec[1], dict) else None)
            if isinstance(opts, list) and any(PROBE in str(o) for o in opts):
                extra = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
                extra.pop("options", None)
                extra["atelier_file_list"] = True
                section[name] = [[], extra]


def normalize(info):
    """An ``/object_info`` entry in the snapshot's form: JSON types, ``FIELDS`` only, flags that are
    off and empty values dropped (V1 and V3 classes write them differently), file lists marked."""
    d = json.loads(json.dumps(info))
    mark_file_lists(d)
    out = {}
    for k in FIELDS:
        v = d.get(k)
        if k == "output_node":
            out[k] = bool(v)
        elif k in ("deprecated", "experimental"):
            if v:
                out[k] = True
        elif k == "output_tooltips":
            if v and any(v):
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def is_pack_id(key):
    return key.startswith("Atelier") and not key.startswith("AtelierE2E")


def _is_file_list(spec):
    return isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict) and \
        bool(spec[1].get("atelier_file_list"))


def _without_options(spec):
    """An input spec with its combo options (and the file-list mark) left out."""
    if not isinstance(spec, list) or not spec:
        return spec
    extra = {k: v for k, v in spec[1].items() if k not in ("options", "atelier_file_list")} \
        if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return ["COMBO" if isinstance(spec[0], list) else spec[0], extra]


def diff_defs(snapshot, fresh, same_host_version=True):
    """Differences between two ``nodes`` dicts (``{id: normalized entry}``), as readable lines.

    Pack nodes: missing, extra, and every field and input that differs (with another host version,
    combo options are left out: a pack node may list the host's samplers). Host nodes: missing from
    ``fresh``; their definitions are compared only when ``same_host_version``."""
    problems = []
    pack_s = {k for k in snapshot if is_pack_id(k)}
    pack_f = {k for k in fresh if is_pack_id(k)}
    for k in sorted(pack_f - pack_s):
        problems.append(f"{k}: pack node not in the snapshot")
    for k in sorted(pack_s - pack_f):
        problems.append(f"{k}: in the snapshot but the pack has no such node")
    for k in sorted(set(snapshot) - pack_s):
        if k not in fresh:
            problems.append(f"{k}: host node missing")
    compare = pack_s & pack_f
    if same_host_version:
        compare |= {k for k in snapshot if k in fresh} - pack_s
    for k in sorted(compare):
        s, f = snapshot[k], fresh[k]
        for field in sorted(set(s) | set(f)):
            if field == "input":
                continue
            if s.get(field) != f.get(field):
                problems.append(f"{k}.{field}: snapshot {s.get(field)!r} != now {f.get(field)!r}")
        si, fi = s.get("input", {}), f.get("input", {})
        for section in sorted(set(si) | set(fi)):
            a, b = si.get(section, {}), fi.get(section, {})
            for name in sorted(set(a) | set(b)):
                sa, sb = a.get(name), b.get(name)
                if not same_host_version or _is_file_list(sa) or _is_file_list(sb):
                    # a combo of the host's lists (samplers...) differs by version; a file list by install
                    sa, sb = _without_options(sa), _without_options(sb)
                if sa != sb:
                    problems.append(f"{k}.input.{section}.{name}: snapshot {a.get(name)!r} != now {b.get(name)!r}")
    return problems


# -- the host side (needs COMFYUI_DIR on sys.path) ------------------------------------------------
def host_node_info():
    """The host's own ``node_info(node_class)`` (``/object_info``), taken from ``server.py``.

    It is a closure inside ``PromptServer.__init__``; its source is read and run with the server
    module's globals, so the conversion is the host's, V1 and V3 alike."""
    import server
    src = inspect.getsource(server.PromptServer.__init__)
    lines = src.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "def node_info(node_class):"), None)
    if start is None:
        raise RuntimeError("this ComfyUI's server.py has no node_info(node_class) in PromptServer.__init__")
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    namespace = dict(vars(server))
    exec(textwrap.dedent("\n".join(lines[start:end])), namespace)
    return namespace["node_info"]


def collect(comfy_dir):
    """``{"comfyui_version", "missing_host_nodes", "nodes"}`` from the host at ``comfy_dir``."""
    comfy_dir = str(pathlib.Path(comfy_dir).resolve())
    if comfy_dir not in sys.path:
        sys.path.insert(0, comfy_dir)
    from comfy.cli_args import args
    args.cpu = True
    import utils.extra_config  # noqa: F401  first, as main.py does: the host's `utils` package, not comfy/utils.py
    import folder_paths
    import server  # noqa: F401
    import nodes
    base = pathlib.Path(tempfile.mkdtemp(prefix="atelier_defs_"))
    try:
        add_probes(base)
        for d in PROBE_DIRS:
            if d.startswith("models/"):
                folder_paths.add_model_folder_path(d.split("/", 1)[1], str(base / d), is_default=True)
        folder_paths.set_input_directory(str(base / "input"))
        logging.disable(logging.WARNING)   # the host's import chatter
        try:
            asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        finally:
            logging.disable(logging.NOTSET)
        before = set(nodes.NODE_CLASS_MAPPINGS)
        if not asyncio.run(nodes.load_custom_node(str(REPO))):
            raise RuntimeError(f"the host could not load the pack from {REPO} (see the log above)")
        pack = sorted(set(nodes.NODE_CLASS_MAPPINGS) - before)
        if not pack or not all(is_pack_id(k) for k in pack):
            raise RuntimeError(f"the pack registered {pack}: expected Atelier... ids")
        node_info = host_node_info()
        keep = pack + [k for k in HOST_NODES if k in nodes.NODE_CLASS_MAPPINGS]
        defs = {k: normalize(node_info(k)) for k in keep}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    from comfyui_version import __version__
    return {"comfyui_version": __version__, "missing_host_nodes": sorted(set(HOST_NODES) - set(defs)),
            "nodes": dict(sorted(defs.items()))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=pathlib.Path, default=OUT, help=f"where to write (default {OUT.relative_to(REPO)})")
    ap.add_argument("--check", action="store_true", help="compare with the snapshot at --out instead of writing")
    a = ap.parse_args()
    comfy = os.environ.get("COMFYUI_DIR")
    if not comfy or not (pathlib.Path(comfy) / "comfy" / "model_patcher.py").is_file():
        sys.exit("set COMFYUI_DIR to a ComfyUI tree (and run with a Python that imports it)")
    snap = collect(comfy)
    n = sum(is_pack_id(k) for k in snap["nodes"])
    summary = (f"{n} pack nodes, {len(snap['nodes']) - n} host nodes, ComfyUI {snap['comfyui_version']}, "
               f"missing host nodes {snap['missing_host_nodes']}")
    if a.check:
        old = json.loads(a.out.read_text())
        problems = diff_defs(old["nodes"], snap["nodes"], old.get("comfyui_version") == snap["comfyui_version"])
        for p in problems:
            print(p)
        print(f"{'DIFFERS' if problems else 'matches'}: {a.out} ({summary})")
        sys.exit(1 if problems else 0)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(snap, indent=1) + "\n")
    print(f"wrote {a.out} ({summary})")


if __name__ == "__main__":
    main()
