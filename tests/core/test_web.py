"""The frontend extension, checked without a browser: syntax, and host imports that resolve.

ComfyUI serves ``WEB_DIRECTORY`` at ``/extensions/<pack folder>/``; a module there must import the
host's ``/scripts/app.js`` with a relative path that climbs exactly to the server root.
"""
import posixpath
import re
import shutil
import subprocess

import pytest

from _testenv import REPO

WEB = REPO / "web"
JS = sorted(WEB.rglob("*.js"))


def _web_directory():
    m = re.search(r'WEB_DIRECTORY\s*=\s*"([^"]+)"', (REPO / "__init__.py").read_text())
    assert m, "__init__.py sets no WEB_DIRECTORY"
    return (REPO / m.group(1)).resolve()


def test_web_directory_is_web():
    assert _web_directory() == WEB.resolve()
    assert JS, "no .js files under web/"


@pytest.mark.parametrize("path", JS, ids=[p.name for p in JS])
def test_host_imports_resolve_to_server_root(path):
    served = "/extensions/ComfyUI-Atelier/" + path.relative_to(WEB).as_posix()
    imports = re.findall(r'^\s*import\s[^;]*?from\s+"([^"]+)"', path.read_text(), flags=re.M)
    host = [i for i in imports if i.endswith(("scripts/app.js", "scripts/api.js"))]
    assert host, "the extension should import the host's app.js"
    for rel in host:
        url = posixpath.normpath(posixpath.join(posixpath.dirname(served), rel))
        assert url in ("/scripts/app.js", "/scripts/api.js"), f"{rel} resolves to {url}"


@pytest.mark.parametrize("path", JS, ids=[p.name for p in JS])
def test_js_syntax(path, tmp_path):
    node = shutil.which("node")
    assert node is not None, "node (Node.js) not on PATH: apt-get install -y nodejs (scripts/setup.sh hosts does it)"
    mod = tmp_path / (path.stem + ".mjs")
    mod.write_text(path.read_text())
    r = subprocess.run([node, "--check", str(mod)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_extension_contract():
    """The event name and DOM class the server side and the browser test rely on."""
    src = (WEB / "js" / "atelier.js").read_text()
    assert '"atelier.magcache.report"' in src
    assert "atelier-step-strip" in src
    assert "/atelier/magcache/schedule" in src
    hook = (REPO / "nodes" / "magcache_hook.py").read_text()
    assert 'REPORT_EVENT = "atelier.magcache.report"' in hook


def test_plan_query_params_are_accepted_by_the_route():
    """Every parameter the frontend sends to /atelier/magcache/schedule is one the route accepts, reads a
    widget the node has, and for 'auto' the model fields the node reports (dim, in_dim, model_type). The
    frontend writes no default of its own: a missing widget leaves the parameter out and the route takes the
    settings table's default."""
    from magcache.resolve import plan_query
    from magcache.settings import SETTINGS
    src = (WEB / "js" / "atelier.js").read_text()
    body = src[src.index("export function planQuery"):src.index("async function refreshPlan")]
    sent = dict(re.findall(r'\["(\w+)", "(\w+)"\]', body))
    assert sent, "planQuery sends no widget values"
    assert "widgetValue" not in body and "0.12" not in body
    for param, widget in sent.items():
        assert widget in SETTINGS, widget
    model = set(re.findall(r"q\.(\w+) = m\.\1", body))
    assert model == {"dim", "in_dim", "model_type", "family"}
    q = {p: str(SETTINGS[w].default) for p, w in sent.items()}
    for fam, preset in (("flux", "flux"), ("qwen_image", "qwen_image"), ("hunyuan_video", "hunyuan_video"),
                        ("chroma", "chroma")):   # another family: the node's family alone picks its curve
        d = plan_query(dict(q, family=fam))
        assert (d["preset"], d["family"], d["detected"]) == (preset, fam, True)
    q.update(dim="5120", in_dim="36", model_type="i2v")
    assert plan_query(q)["preset"] == "wan2.1_i2v_480p_14B"
    # leaving every setting out gives the same plan: the route's defaults are the table's
    assert plan_query({"preset": "wan2.1_t2v_1.3B"}) == plan_query(
        {p: str(SETTINGS[w].default) for p, w in sent.items() if p != "preset"} | {"preset": "wan2.1_t2v_1.3B"})
    assert "atelier_magcache" in src  # the node's ui key that carries the model config


def _node_scaffold(tmp_path, graph_nodes="[]"):
    """atelier.js as the browser imports it, under Node.js: the host's app.js / api.js stood in for at the paths
    the module imports (``app.graph._nodes``: ``graph_nodes``, a JS array literal)."""
    (tmp_path / "package.json").write_text('{"type": "module"}')
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(
        f"export const app = {{ registerExtension() {{}}, graph: {{ _nodes: {graph_nodes} }} }};\n")
    (tmp_path / "scripts" / "api.js").write_text("export const api = { addEventListener() {} };\n")
    ext = tmp_path / "extensions" / "ComfyUI-Atelier" / "js"
    ext.mkdir(parents=True)
    (ext / "atelier.js").write_text((WEB / "js" / "atelier.js").read_text())


def _run_node(script):
    """JSON that a Node.js script prints."""
    import json
    node = shutil.which("node")
    assert node is not None, "node (Node.js) not on PATH: apt-get install -y nodejs (scripts/setup.sh hosts does it)"
    r = subprocess.run([node, str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_plan_query_sends_what_the_graph_decides_for_auto(tmp_path):
    """planQuery counts the graph's ReferenceLatent nodes that run (mode 0; muted 2 and bypassed 4 do not): the
    route then plans a FLUX model on the flux_kontext curve, what the run picks when its conditioning carries
    reference latents. It sends the empty latent's height when the graph has one (HunyuanVideo at 544 px: the 544p
    curve, as the run picks it from the latent). Without them, no parameter is sent and the plans are FLUX.1-dev's
    and HunyuanVideo 720p's."""
    from magcache.resolve import plan_query
    _node_scaffold(tmp_path, '[{comfyClass: "ReferenceLatent", mode: 0}, {comfyClass: "ReferenceLatent", mode: 4}, '
                             '{comfyClass: "ReferenceLatent", mode: 2}, {comfyClass: "KSampler", mode: 0}, '
                             '{comfyClass: "EmptyHunyuanLatentVideo", mode: 0, widgets: [{name: "height", value: 544}]}]')
    (tmp_path / "run.js").write_text(
        'import { app } from "./scripts/app.js";\n'
        'import { planQuery } from "./extensions/ComfyUI-Atelier/js/atelier.js";\n'
        'const node = (family) => ({ widgets: [{ name: "preset", value: "auto" }, { name: "preview_steps", value: 50 }],\n'
        '                            __atelierModel: { family } });\n'
        'const q = (family) => Object.fromEntries(planQuery(node(family)));\n'
        'const withGraph = [q("flux"), q("hunyuan_video")];\n'
        'app.graph._nodes = [];\n'
        'console.log(JSON.stringify([withGraph, [q("flux"), q("hunyuan_video")]]));\n')
    (flux, hv), (flux_bare, hv_bare) = _run_node(tmp_path / "run.js")
    assert flux == {"preset": "auto", "steps": "50", "family": "flux", "reference_latents": "1", "height": "544"}
    assert flux_bare == {"preset": "auto", "steps": "50", "family": "flux"}
    assert plan_query(flux)["preset"] == "flux_kontext" and plan_query(flux_bare)["preset"] == "flux"
    assert plan_query(hv)["preset"] == "hunyuan_video_544p" and plan_query(hv_bare)["preset"] == "hunyuan_video"
    assert plan_query(dict(hv_bare, height="720"))["preset"] == "hunyuan_video"
    assert plan_query(dict(hv_bare, height="551"))["preset"] == "hunyuan_video_544p"   # 68 latent rows, as the run


def test_plan_strip_rows_are_the_branches_of_the_family(tmp_path):
    """What the strip shows of the route's plan (``plan_query``, what GET /atelier/magcache/schedule answers):
    FLUX and HunyuanVideo (one branch: embedded guidance, no uncond call) one 'cond' row, Qwen-Image and Wan a cond
    and an uncond row, each cell the plan's mark for its step. ``planStrip`` of atelier.js run by Node.js, the
    host's app.js / api.js stood in for at the paths the module imports."""
    import json
    from magcache.resolve import plan_query
    _node_scaffold(tmp_path)
    q = {"preset": "auto", "steps": "8", "thresh": "0.24", "k": "6", "retention": "0.2"}
    plans = {f: plan_query(dict(q, family=f)) for f in ("flux", "hunyuan_video", "qwen_image")}
    plans["wan"] = plan_query({"preset": "wan2.1_t2v_1.3B", "steps": "8", "thresh": "0.24", "k": "6"})
    plans["flux2"] = plan_query(dict(q, family="flux2"))   # no shipped curve: the first run records it
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    (tmp_path / "run.js").write_text(
        'import { readFileSync } from "node:fs";\n'
        'import { planStrip } from "./extensions/ComfyUI-Atelier/js/atelier.js";\n'
        'const plans = JSON.parse(readFileSync(new URL("./plans.json", import.meta.url)));\n'
        'console.log(JSON.stringify(Object.fromEntries(Object.entries(plans).map(([k, s]) => [k, planStrip(s)]))));\n')
    strips = _run_node(tmp_path / "run.js")
    assert plans.pop("flux2") == {"record": True, "family": "flux2", "title": "FLUX.2", "steps": 8}
    rec = strips.pop("flux2")
    assert rec["title"] == "Plan: FLUX.2 has no shipped curve" and "first full run records it" in rec["foot"]
    assert "branches" not in rec
    for fam, s in plans.items():
        rows = strips[fam]["branches"]
        names = ("cond",) if fam in ("flux", "hunyuan_video") else ("cond", "uncond")
        assert s["branches"] == len(names) and tuple(rows) == names, (fam, list(rows))
        for name in names:
            assert [i for i, m in enumerate(rows[name]) if m == "S"] == s[f"{name}_skipped"], (fam, name)
            assert len(rows[name]) == 8 and set(rows[name]) <= {"C", "S"}
        assert strips[fam]["title"].startswith(f"Plan ({s['preset']}"), strips[fam]["title"]
        assert s["cond_skipped"], fam   # the plans skip: the rows are not all "C" by chance
