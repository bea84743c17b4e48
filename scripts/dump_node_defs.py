"""Write tests/data/node_defs.json: the node definitions the workflow checks read without a host.

Starts a real ComfyUI server (``COMFYUI_DIR``, else ~/ComfyUI) with the pack in a throw-away
base directory whose model folders are empty, reads ``/object_info`` and keeps every Atelier
node plus the host nodes the example workflows use (``HOST_NODES``). Combo inputs that list
model files are therefore empty in the snapshot; the checks treat an empty combo as "a file name".

    COMFYUI_DIR=/root/ComfyUI .venv/bin/python scripts/dump_node_defs.py

``tests/host/test_e2e_server.py`` fails when the snapshot no longer matches the live server.
"""
import json
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from _comfyserver import ComfyServer, make_base_dir, cleanup  # noqa: E402
from _testenv import find_comfyui  # noqa: E402

OUT = REPO / "tests" / "data" / "node_defs.json"

# Host nodes the example workflows may use (present in ComfyUI v0.3.64 and v0.8.0).
HOST_NODES = [
    "UNETLoader", "CLIPLoader", "VAELoader", "CheckpointLoaderSimple", "LoraLoaderModelOnly",
    "CLIPTextEncode", "EmptyHunyuanLatentVideo", "ModelSamplingSD3", "KSampler", "KSamplerAdvanced",
    "VAEDecode", "VAEEncode", "SaveAnimatedWEBP", "SaveWEBM", "SaveImage", "PreviewImage", "LoadImage",
    "LoadVideo", "GetVideoComponents", "CreateVideo", "SaveVideo", "ImageScale", "ImageFromBatch", "PreviewAny",
]


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


def snapshot(info, system_stats):
    keep = {k: v for k, v in info.items()
            if (k.startswith("Atelier") and not k.startswith("AtelierE2E")) or k in HOST_NODES}
    for v in keep.values():
        v.pop("python_module", None)
        mark_file_lists(v)
    missing = sorted(set(HOST_NODES) - set(keep))
    return {"comfyui_version": system_stats.get("system", {}).get("comfyui_version"),
            "missing_host_nodes": missing, "nodes": dict(sorted(keep.items()))}


def main():
    comfy = find_comfyui()
    if comfy is None:
        sys.exit("no ComfyUI tree: set COMFYUI_DIR")
    base = make_base_dir()
    add_probes(base)
    srv = ComfyServer(comfy, base)
    try:
        srv.start()
        snap = snapshot(srv.get_json("/object_info"), srv.get_json("/system_stats"))
    finally:
        srv.stop()
        cleanup(base)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(snap, indent=1, sort_keys=False) + "\n")
    n = sum(k.startswith("Atelier") for k in snap["nodes"])
    print(f"wrote {OUT} ({n} Atelier nodes, {len(snap['nodes']) - n} host nodes, "
          f"ComfyUI {snap['comfyui_version']}, missing {snap['missing_host_nodes']})")


if __name__ == "__main__":
    main()
