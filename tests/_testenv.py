"""Paths, host discovery and the torch thread setting shared by the test tiers (imported by both conftests). The rule that
finds the ComfyUI tree lives in ``scripts/hostbridge.py`` (on sys.path through pytest.ini)."""
import os
import pathlib

import hostbridge

REPO = pathlib.Path(__file__).resolve().parents[1]
# One folder of test outputs per host tree, so that the tiers that scripts/test.sh runs side by side never
# write over each other's files.
_TREE = os.path.basename(os.path.normpath(os.environ["COMFYUI_DIR"])) if os.environ.get("COMFYUI_DIR") else ""
OUT = REPO / "tests" / "_out" / _TREE if _TREE else REPO / "tests" / "_out"

HOST_MISSING = (
    "\n" + "!" * 78 + "\n"
    "!! HOST TIER SKIPPED: no ComfyUI tree found. Set COMFYUI_DIR to a ComfyUI\n"
    "!! checkout (or put one at ~/ComfyUI) to run the tests against the host.\n"
    + "!" * 78
)


def one_thread():
    """Context for tests: torch work on small tensors runs faster single-threaded on a loaded 2-core machine
    (measured 3x to 10x); restores the previous setting. As a fixture: ``single_thread`` (tests/conftest.py)."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def cm():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(n)
    return cm()


def find_comfyui():
    """The ComfyUI tree to test against (``hostbridge.find_comfyui``: ``$COMFYUI_DIR``, else
    ``~/ComfyUI``), or None."""
    return hostbridge.find_comfyui()
