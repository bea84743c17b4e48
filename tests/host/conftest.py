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


@pytest.fixture(scope="module")
def mc(pack):
    """The pack's MagCache nodes module."""
    return pack.nodes.magcache_nodes


@pytest.fixture(scope="module")
def core(pack):
    """The pack's MagCache core."""
    return pack.magcache


@pytest.fixture(scope="module")
def nn_(pack):
    """The pack's NAG nodes module."""
    return pack.nodes.nag_nodes


@pytest.fixture(scope="module")
def t2v(host):
    """A tiny random Wan2.1 T2V (seed 1), built once per test module."""
    return host.load_tiny_wan("t2v", seed=1)


class Boom(RuntimeError):
    """The error a test raises in the middle of a sampling run, as the host's interrupt would."""


@pytest.fixture(scope="session")
def interrupt(comfy_dir):
    """``interrupt(model, at, run, wrapper="APPLY_MODEL")``: ``run(broken)``, where ``broken`` is a clone of
    ``model`` whose ``at``-th (1-based) call of the host's ``wrapper`` (a ``WrappersMP`` name) raises
    :class:`Boom`; the run must fail with it. The caller then checks that nothing of the run is left."""
    import comfy.patcher_extension as pe

    def interrupted(model, at, run, wrapper="APPLY_MODEL"):
        calls = {"n": 0}

        def raiser(executor, *a, **k):
            calls["n"] += 1
            if calls["n"] == at:
                raise Boom("interrupt")
            return executor(*a, **k)

        broken = model.clone()
        broken.add_wrapper_with_key(getattr(pe.WrappersMP, wrapper), "test_raiser", raiser)
        with pytest.raises(Boom):
            run(broken)
    return interrupted


# Families that ComfyUI v0.3.64 lacks; every other family must exist on every tree tested.
NEWER_THAN_0_3_64 = {"flux2": "Flux2", "hunyuan_video15": "HunyuanVideo15", "z_image": "ZImage"}


class TinyFamilies:
    """The shared builder of tiny family models (tests/_families.py) for one test module: its functions, plus
    :meth:`model`, each family's tiny model built once per module."""

    def __init__(self, module):
        self._module = module
        self._built = {}

    def __getattr__(self, name):
        return getattr(self._module, name)

    def model(self, name):
        """The family's tiny model, or a skip where this tree predates the family (a failure otherwise)."""
        fam = self._module
        if not fam.present(name):
            if name in NEWER_THAN_0_3_64 and fam.host_version_tuple() < (0, 8, 0):
                pytest.skip(f"{name}: ComfyUI {fam.host_version()} has no {NEWER_THAN_0_3_64[name]} "
                            "(added after v0.3.64; present in v0.8.0)")
            pytest.fail(f"{name}: ComfyUI {fam.host_version()} should have {fam.FAMILIES[name].config}")
        if name not in self._built:
            self._built[name] = fam.build(name, seed=0)
        return self._built[name]


@pytest.fixture(scope="module")
def fam(comfy_dir, pack):
    """:class:`TinyFamilies` for the module, on one torch thread (tiny models: faster than two on a shared
    2-core box); the models are let go at the end, while the host is still importable."""
    import torch

    import _families
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    families = TinyFamilies(_families)
    try:
        yield families
    finally:
        torch.set_num_threads(threads)
        families._built.clear()
