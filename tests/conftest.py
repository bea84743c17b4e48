"""Shared pytest setup: the core tier always runs; the host tier needs a ComfyUI tree.

The host tree is found from ``COMFYUI_DIR`` or, failing that, the conventional
``~/ComfyUI``. When none is found every host test is skipped and the run ends
with a loud banner saying so.
"""
import pytest

from _testenv import OUT, HOST_MISSING, find_comfyui


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
