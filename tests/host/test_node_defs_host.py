"""tests/data/node_defs.json (read by the core tier) against the pack as this host registers it.

``scripts/dump_node_defs.py`` runs in a fresh interpreter: the host's own loader registers the pack
(``NODE_CLASS_MAPPINGS`` of V1 or V3 classes, or ``comfy_entrypoint``) and the host's own
``node_info`` converts every node, as ``/object_info`` does. Every pack node is compared with the
snapshot in both directions, field by field and input by input."""
import asyncio
import json
import os
import subprocess
import sys

import pytest

from _testenv import REPO

sys.path.insert(0, str(REPO / "scripts"))
from dump_node_defs import diff_defs, is_pack_id  # noqa: E402

pytestmark = pytest.mark.host
SNAPSHOT = REPO / "tests" / "data" / "node_defs.json"
REGENERATE = "regenerate it with the command in scripts/dump_node_defs.py's docstring"


@pytest.fixture(scope="module")
def fresh(comfy_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("defs") / "node_defs.json"
    env = dict(os.environ, COMFYUI_DIR=str(comfy_dir), PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "dump_node_defs.py"), "--out", str(out)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"dump_node_defs failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return json.loads(out.read_text())


def test_snapshot_matches_this_host(fresh):
    snap = json.loads(SNAPSHOT.read_text())
    same = snap["comfyui_version"] == fresh["comfyui_version"]
    problems = diff_defs(snap["nodes"], fresh["nodes"], same_host_version=same)
    assert not problems, f"{SNAPSHOT.name} is stale ({REGENERATE}):\n" + "\n".join(problems)
    assert fresh["missing_host_nodes"] == [], fresh["missing_host_nodes"]


def _declared_ids(pack):
    """The node ids the pack module declares, read the way the host reads them."""
    mappings = getattr(pack, "NODE_CLASS_MAPPINGS", None)
    if mappings is not None:
        return set(mappings)
    from comfy_api.latest import ComfyExtension
    ext = pack.comfy_entrypoint()
    ext = asyncio.run(ext) if asyncio.iscoroutine(ext) else ext
    assert isinstance(ext, ComfyExtension)
    return {c.GET_SCHEMA().node_id for c in asyncio.run(ext.get_node_list())}


def test_dump_sees_every_declared_node(fresh, pack):
    declared = _declared_ids(pack)
    dumped = {k for k in fresh["nodes"] if is_pack_id(k)}
    assert declared and declared == dumped, (sorted(declared - dumped), sorted(dumped - declared))
    modules = [getattr(pack.nodes, m) for m in dir(pack.nodes) if m.endswith("_nodes")]
    listed = {c.GET_SCHEMA().node_id if hasattr(c, "GET_SCHEMA") else c.__name__
              for m in modules for c in getattr(m, "NODES", [])}
    assert listed <= dumped, sorted(listed - dumped)   # every module's NODES list is registered


def test_every_pack_output_has_a_tooltip(fresh):
    missing = [f"{k} output {i} ({name})" for k, d in fresh["nodes"].items() if is_pack_id(k)
               for i, name in enumerate(d.get("output_name", []))
               if not (d.get("output_tooltips") or [None] * (i + 1))[i]]
    assert not missing, "outputs without a tooltip:\n" + "\n".join(missing)
