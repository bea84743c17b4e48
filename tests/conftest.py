"""Shared pytest setup: the core tier always runs; the host tier needs a ComfyUI tree.

The host tree is found from ``COMFYUI_DIR`` or, failing that, the conventional
``~/ComfyUI``. When none is found every host test is skipped and the run ends
with a loud banner saying so.

``device`` (as in kornia's test suite): a test that takes a ``device`` argument runs once per
device, ``cpu`` and, where torch sees one, ``cuda``. ``--device cpu`` (or ``cuda``) picks one;
asking for ``cuda`` on a machine without one fails instead of quietly testing the CPU.
"""
import pytest

from _testenv import OUT, HOST_MISSING, find_comfyui, one_thread


def pytest_addoption(parser):
    parser.addoption("--device", action="store", default="all", choices=("all", "cpu", "cuda"),
                     help="devices for tests taking a 'device' argument: all (cpu + cuda where present), "
                          "cpu or cuda")


def selected_devices(config):
    """The torch devices a ``device`` test runs on."""
    import torch
    choice = config.getoption("--device")
    cuda = torch.cuda.is_available()
    if choice == "cuda" and not cuda:
        raise pytest.UsageError("--device cuda: torch sees no CUDA device")
    names = {"cpu": ["cpu"], "cuda": ["cuda"], "all": ["cpu"] + (["cuda"] if cuda else [])}[choice]
    return [torch.device(n) for n in names]


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        devices = selected_devices(metafunc.config)
        metafunc.parametrize("device", devices, ids=[d.type for d in devices])


@pytest.fixture()
def single_thread():
    """The test on one torch thread (:func:`_testenv.one_thread`); a module takes it for every test with
    ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    with one_thread():
        yield


@pytest.fixture(scope="session")
def out_dir():
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT


def pytest_report_header(config):
    d = find_comfyui()
    return f"atelier host tier: {d}" if d else "atelier host tier: NO ComfyUI tree (host tests will skip)"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = terminalreporter.stats.get("skipped", [])
    if any("HOST TIER SKIPPED" in str(getattr(r, "longrepr", "")) for r in skipped):
        terminalreporter.write_line(HOST_MISSING, red=True, bold=True)
