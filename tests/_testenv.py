"""Paths and host discovery shared by the test tiers (imported by both conftests)."""
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "_out"

HOST_MISSING = (
    "\n" + "!" * 78 + "\n"
    "!! HOST TIER SKIPPED: no ComfyUI tree found. Set COMFYUI_DIR to a ComfyUI\n"
    "!! checkout (or put one at ~/ComfyUI) to run the tests against the host.\n"
    + "!" * 78
)


def find_comfyui():
    """The ComfyUI tree to test against: ``$COMFYUI_DIR``, else ``~/ComfyUI``, else None."""
    for c in (os.environ.get("COMFYUI_DIR"), str(pathlib.Path.home() / "ComfyUI")):
        if c and (pathlib.Path(c) / "comfy" / "model_patcher.py").is_file():
            return pathlib.Path(c).resolve()
    return None
