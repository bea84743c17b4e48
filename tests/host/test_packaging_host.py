"""pyproject.toml as the host's own parser (comfy_config, what ComfyUI reads when it loads the pack) sees it."""
import pytest

from _testenv import REPO

pytestmark = pytest.mark.host


def test_host_reads_the_pyproject(comfy_dir):
    from comfy_config.config_parser import extract_node_configuration
    cfg = extract_node_configuration(str(REPO))
    assert cfg is not None
    assert cfg.project.supported_os == ["OS Independent"]
    assert cfg.project.supported_accelerators == ["GPU :: NVIDIA CUDA"]
    assert cfg.project.supported_comfyui_version == ">=0.3.64,<=0.8.0"
    assert cfg.tool_comfy.icon == ""          # no Icon: the registry wants a URL, not a file path
    assert cfg.tool_comfy.publisher_id == "atelier" and cfg.tool_comfy.display_name == "Atelier"
    deps = sorted(d.split(">")[0].split("=")[0] for d in cfg.project.dependencies)
    assert "kornia" not in deps and deps == sorted(
        line.split(">")[0] for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#"))
