"""Host tier: imports a real ComfyUI tree in-process (CPU) and the pack as ComfyUI would, both through
``scripts/hostbridge.py`` (the bridge the benchmarks and the DLoRAL CLI use too)."""
import pytest

import hostbridge
from _testenv import HOST_MISSING, find_comfyui

PACK_NAME = "atelier_pack_under_test"


@pytest.fixture(scope="session")
def comfy_dir():
    """The tree under test on sys.path, the host's CPU flag forced before anything of it is imported."""
    d = find_comfyui()
    if d is None:
        pytest.skip(HOST_MISSING)
    return hostbridge.enter_host(d, cpu="force")


@pytest.fixture(scope="session")
def pack(comfy_dir):
    """The pack imported as a package under an arbitrary name, like ComfyUI does."""
    return hostbridge.import_pack(comfy_dir, name=PACK_NAME, cpu="force")


@pytest.fixture(scope="session")
def host(comfy_dir, pack):
    """A small facade over the host used by the host tests (see _hostutil)."""
    import _hostutil
    return _hostutil
