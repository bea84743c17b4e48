"""Host tier: imports a real ComfyUI tree in-process (CPU) and the pack as ComfyUI would."""
import importlib.util
import sys

import pytest

from _testenv import REPO, HOST_MISSING, find_comfyui


@pytest.fixture(scope="session")
def comfy_dir():
    d = find_comfyui()
    if d is None:
        pytest.skip(HOST_MISSING)
    if str(d) not in sys.path:
        sys.path.insert(0, str(d))
    # The host reads its CLI args at import time; force CPU before anything else.
    from comfy.cli_args import args
    args.cpu = True
    return d


@pytest.fixture(scope="session")
def pack(comfy_dir):
    """The pack imported as a package under an arbitrary name, like ComfyUI does."""
    name = "atelier_pack_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def host(comfy_dir, pack):
    """A small facade over the host used by the host tests (see _hostutil)."""
    import _hostutil
    return _hostutil
