"""End-to-end in a real browser: headless Debian ``chromium`` (CDP) against a real ComfyUI server.

Opens the UI, opens the templates browser (the menu's "Browse Templates" command) and clicks the
pack's MagCache template; if the dialog's layout cannot be driven, loads the same template JSON
from ``/api/workflow_templates`` into the graph the way the dialog does and says so in the output.
The official model names are swapped in the graph for the tiny files and the two CLIPTextEncode
nodes for the test-only encoder (see tests/_e2e.py). Queues with the Run button, waits for the
run, and asserts that the MagCache step strip (planned, then as run) and the output preview are in
the DOM; then the HunyuanVideo + MagCache template's planned strip before any run (the family read from
its loader's file). Screenshots: tests/_out/e2e_browser_*.png.
"""
import asyncio
import contextlib
import json

import aiohttp
import pytest

from _cdp import Chromium, Page, find_chromium
from _workflows import TEMPLATE_TITLES
from _e2e import (PACK_FOLDER, running_server, write_tiny_models, write_tiny_families, STEPS,
                  TINY_UNET, TINY_VAE, TINY_HV, SIZE, FRAMES)

pytestmark = [pytest.mark.host, pytest.mark.slow]
TEMPLATE = "magcache_wan21_t2v"
SIZE_R = 256

APP = "(window.comfyAPI?.app?.app || window.app)"

SWAP_JS = """(() => {
  const app = %(app)s, g = app.graph;
  const LG = window.LiteGraph || window.comfyAPI?.litegraph?.LiteGraph;
  const set = (n, name, v) => { const w = n.widgets?.find(w => w.name === name);
                                if (w) { w.value = v; w.callback?.(v); } };
  for (const n of [...g._nodes]) {
    if (n.type === 'UNETLoader') set(n, 'unet_name', %(unet)s);
    if (n.type === 'VAELoader') set(n, 'vae_name', %(vae)s);
    if (n.type === 'EmptyHunyuanLatentVideo') { set(n, 'width', %(size)d); set(n, 'height', %(size)d);
                                                set(n, 'length', %(frames)d); }
    if (n.type === 'KSampler') { set(n, 'steps', %(steps)d); set(n, 'control_after_generate', 'fixed'); }
    if (n.type === 'AtelierMagCacheWan') set(n, 'preview_steps', %(steps)d);
  }
  const linkOf = id => (g.links?.get ? g.links.get(id) : g.links[id]);
  for (const n of [...g._nodes]) if (n.type === 'CLIPTextEncode') {
    const r = LG.createNode('AtelierE2ETextEncode');
    r.pos = [n.pos[0], n.pos[1]];
    g.add(r);
    set(r, 'text', n.widgets.find(w => w.name === 'text').value);
    const targets = (n.outputs[0].links || []).map(linkOf).filter(Boolean)
      .map(l => [g.getNodeById(l.target_id), l.target_slot]);
    g.remove(n);
    for (const [t, slot] of targets) r.connect(0, t, slot);
  }
  for (const n of [...g._nodes]) if (n.type === 'CLIPLoader') g.remove(n);
  g.setDirtyCanvas(true, true);
  return g._nodes.map(n => n.type);
})()"""

VIEW_JS = """(() => { const app = %s, c = app.canvas;
  c.ds.scale = 0.72; c.ds.offset = [-680, 150]; c.setDirty(true, true); return true; })()""" % APP

CLICK_TEXT_JS = """((texts) => {
  const els = [...document.querySelectorAll('[role=dialog] *, .p-dialog *')];
  for (const t of texts) {
    const el = els.find(e => e.children.length === 0 && e.textContent.trim() === t);
    if (el) { (el.closest('[role=button],button,a,li,.cursor-pointer') || el).click(); return t; }
  }
  return null;
})(%s)"""


@pytest.fixture(scope="module")
def server(comfy_dir):
    def prepare(base):
        write_tiny_models(base)
        write_tiny_families(base, only=("hunyuan_video",), vaes=False)   # the HunyuanVideo plan reads its header
        # not a first start: the 1.3x frontend would open its templates browser over the canvas
        (base / "user" / "default").mkdir(parents=True, exist_ok=True)
        (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    with running_server(comfy_dir, prepare) as srv:
        yield srv


@pytest.fixture(scope="module")
def chromium():
    exe = find_chromium()
    # scripts/test.sh installs Debian's chromium; without it this test fails rather than skip
    assert exe is not None, "no chromium on PATH: apt-get install -y chromium (scripts/setup.sh hosts does it as root)"
    return exe


def _graph_has(node_type):
    return f"{APP}?.graph?._nodes?.some(n => n.type === '{node_type}')"


async def _load_template(page, url, notes, template=TEMPLATE, marker="AtelierMagCacheWan"):
    """Open the templates browser and click the pack's template; fall back to loading its JSON."""
    TEMPLATE = TEMPLATE_TITLES[template]  # noqa: N806  the file name is the title the dialog shows
    try:
        await page.eval(f"{APP}.extensionManager.command.execute('Comfy.BrowseTemplates')")
        await page.wait_for(f"document.body.innerText.includes('{PACK_FOLDER}')", timeout=20)
        await page.eval(CLICK_TEXT_JS % json.dumps([PACK_FOLDER]))
        await page.wait_for(f"document.body.innerText.includes('{TEMPLATE}')", timeout=15)
        notes.append("templates dialog lists the pack and its template")
        clicked = await page.eval(CLICK_TEXT_JS % json.dumps([TEMPLATE]))
        await page.wait_for(_graph_has(marker), timeout=20)
        notes.append(f"template loaded by clicking {clicked!r} in the templates dialog")
        return "menu"
    except (TimeoutError, RuntimeError) as exc:
        notes.append(f"menu path failed ({str(exc)[:200]}); loading via /api/workflow_templates")
    await page.eval("document.querySelectorAll('[role=dialog] button[aria-label=Close], "
                    ".p-dialog-close-button').forEach(b => b.click())")
    await page.eval(f"""(async () => {{
        const r = await fetch('/api/workflow_templates/{PACK_FOLDER}/' + encodeURIComponent({json.dumps(TEMPLATE)}) + '.json');
        await {APP}.loadGraphData(await r.json(), true, true, {json.dumps(TEMPLATE)}); return true; }})()""")
    await page.wait_for(_graph_has(marker), timeout=20)
    return "api"


@contextlib.asynccontextmanager
async def _comfy_page(server, exe):
    """A headless chromium page (1600x1000) on the server's UI, once the graph canvas is up; the browser is
    stopped on the way out."""
    browser = Chromium(exe)
    ws_url = browser.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(ws_url, max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Runtime.enable")
                await page.call("Page.enable")
                await page.call("Emulation.setDeviceMetricsOverride", width=1600, height=1000,
                                deviceScaleFactor=1, mobile=False)
                await page.call("Page.navigate", url=server.url)
                await page.wait_for(f"!!({APP}?.graph && document.querySelector('canvas'))", timeout=120)
                yield page
    finally:
        browser.stop()


async def _scenario(server, exe, out_dir):
    notes = []
    async with _comfy_page(server, exe) as page:
        try:
            await page.wait_for("!!window.__atelierUI", timeout=60)
        except TimeoutError:
            raise AssertionError(f"atelier.js did not load; page errors: {page.errors()}")
        await asyncio.sleep(2)
        how = await _load_template(page, server.url, notes)
        await page.eval("document.querySelectorAll('[role=dialog] button[aria-label=Close], "
                        ".p-dialog-close-button').forEach(b => b.click())")
        types = await page.eval(SWAP_JS % dict(app=APP, unet=json.dumps(TINY_UNET),
                                               vae=json.dumps(TINY_VAE), size=SIZE, frames=FRAMES,
                                               steps=STEPS))
        assert "AtelierE2ETextEncode" in types and "CLIPTextEncode" not in types, types
        await page.eval(VIEW_JS)
        # the planned schedule is on the node before queueing
        plan = await page.wait_for(
            "(() => { const d = document.querySelector('.atelier-step-strip[data-state=plan]');"
            " return d && d.querySelectorAll('.atl-cell').length ? d.innerText : null; })()", timeout=30)
        await asyncio.sleep(1)
        await page.screenshot(out_dir / "e2e_browser_plan.png")
        await _queue(page, server, notes, polls=600)
        strip = await page.wait_for(
            "(() => { const d = document.querySelector('.atelier-step-strip[data-state=run]');"
            " return d ? {text: d.innerText, cells: d.querySelectorAll('.atl-cell').length,"
            " skipped: d.querySelectorAll('.atl-S').length, rows: d.querySelectorAll('.atl-row').length}"
            " : null; })()", timeout=30)
        preview = await page.wait_for(f"""(() => {{
            const imgs = [...document.querySelectorAll('img')].filter(i => i.src.includes('magcache_t2v'));
            const save = {APP}.graph._nodes.find(n => n.type === 'SaveAnimatedWEBP');
            const n = imgs.length + (save?.imgs?.length || 0);
            return n ? {{dom: imgs.length, node: save?.imgs?.length || 0}} : null; }})()""", timeout=30)
        await asyncio.sleep(1.5)
        await page.screenshot(out_dir / "e2e_browser_run.png")
        resto = await _restoration(page, server, notes, out_dir)
        hv_plan = await _hunyuan_plan(page, server, notes, out_dir)
        errors = [e for e in page.errors() if "atelier" in e.lower()]
        return dict(how=how, notes=notes, plan=plan, strip=strip, preview=preview, errors=errors,
                    resto=resto, hv_plan=hv_plan)


async def _hunyuan_plan(page, server, notes, out_dir):
    """The HunyuanVideo + MagCache template before any run: with its loader on the tiny HunyuanVideo file, the strip
    shows the plan 'auto' resolves from that file (HunyuanVideo's curve and rule: one cond row)."""
    await _load_template(page, server.url, notes, template="magcache_hunyuan_video", marker="DualCLIPLoader")
    await page.eval("document.querySelectorAll('[role=dialog] button[aria-label=Close], "
                    ".p-dialog-close-button').forEach(b => b.click())")
    await page.eval(f"""(() => {{ const g = {APP}.graph;
        const set = (n, name, v) => {{ const w = n.widgets?.find(w => w.name === name);
                                       if (w) {{ w.value = v; w.callback?.(v); }} }};
        set(g._nodes.find(n => n.type === 'UNETLoader'), 'unet_name', {json.dumps(TINY_HV)});
        set(g._nodes.find(n => n.type === 'AtelierMagCacheWan'), 'preview_steps', {STEPS});
        return true; }})()""")
    plan = await page.wait_for(
        "(() => { const d = [...document.querySelectorAll('.atelier-step-strip[data-state=plan]')]"
        ".find(d => d.innerText.includes('Plan (hunyuan_video'));"
        " return d ? {text: d.innerText, rows: [...d.querySelectorAll('.atl-row')].map(r => r.dataset.branch),"
        " cells: d.querySelectorAll('.atl-cell').length, skipped: d.querySelectorAll('.atl-S').length} : null; })()",
        timeout=30)
    await page.eval(VIEW_JS)
    await asyncio.sleep(1)
    await page.screenshot(out_dir / "e2e_browser_hunyuan_plan.png")
    return plan


async def _queue(page, server, notes, polls=900):
    """Queue the graph with the Run button (else ``app.queuePrompt``; ``notes`` says which) and wait, polling
    /history every 0.5 s at most ``polls`` times, until every run is complete; the last must have succeeded."""
    hist_before = len(server.get_json("/history"))
    clicked = await page.eval("""(() => {
        const b = [...document.querySelectorAll('button')].find(b =>
            /^(Run|Queue)\\b/i.test((b.innerText || b.getAttribute('aria-label') || '').trim()) ||
            b.dataset?.testid === 'queue-button');
        if (b) { b.click(); return b.innerText.trim() || b.getAttribute('aria-label'); }
        return null; })()""")
    if not clicked:
        notes.append("no Run button found; queued with app.queuePrompt")
        await page.eval(f"{APP}.queuePrompt(0, 1)")
    else:
        notes.append(f"queued with the {clicked!r} button")
    for _ in range(polls):
        h = server.get_json("/history")
        if len(h) > hist_before and all(v.get("status", {}).get("completed") is not None for v in h.values()):
            entry = list(h.values())[-1]
            assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:3000]
            return entry
        await asyncio.sleep(0.5)
    raise TimeoutError(f"run did not finish:\n{server.log_tail()}")


async def _restoration(page, server, notes, out_dir):
    """The restoration sample template: previews and their captions appear on the nodes."""
    await _load_template(page, server.url, notes, template="restoration_sample", marker="AtelierSyntheticDamage")
    await page.eval("document.querySelectorAll('[role=dialog] button[aria-label=Close], "
                    ".p-dialog-close-button').forEach(b => b.click())")
    await page.eval(f"""(() => {{ const g = {APP}.graph;
        const n = g._nodes.find(n => n.type === 'AtelierSyntheticDamage');
        for (const [k, v] of [['width', {SIZE_R}], ['height', {SIZE_R}]]) {{
            const w = n.widgets.find(w => w.name === k); w.value = v; }}
        const c = {APP}.canvas; c.ds.scale = 0.62; c.ds.offset = [40, 130]; c.setDirty(true, true);
        return true; }})()""")
    await _queue(page, server, notes)
    caps = await page.wait_for("""(() => { const d = [...document.querySelectorAll('.atelier-restoration-preview')];
        return d.length >= 4 ? d.map(x => x.textContent) : null; })()""", timeout=60)
    imgs = await page.eval(f"""(() => {{ const app = {APP};
        return app.graph._nodes.filter(n => n.type.startsWith('Atelier') &&
            (n.imgs?.length || app.nodeOutputs?.[String(n.id)]?.images?.length)).map(n => n.type); }})()""")
    await asyncio.sleep(2)
    await page.screenshot(out_dir / "e2e_browser_restoration.png")
    return dict(captions=caps, nodes_with_images=imgs)


def test_browser_template_queue_strip(server, chromium, out_dir, pack):
    r = asyncio.run(_scenario(server, chromium, out_dir))
    print("\n".join(r["notes"]))
    assert "Plan" in r["plan"]
    s = r["strip"]
    assert s["rows"] == 2 and s["cells"] == 2 * STEPS, s
    assert "calls computed" in s["text"]
    assert r["preview"], "no output preview"
    assert not r["errors"], r["errors"]
    assert (out_dir / "e2e_browser_run.png").stat().st_size > 10_000
    rs = r["resto"]
    print("restoration previews:", rs)
    assert len(rs["captions"]) >= 4 and all("preview" in c for c in rs["captions"])
    assert len(rs["nodes_with_images"]) >= 4, rs
    hv = r["hv_plan"]   # the template's settings (thresh 0.24, K 6, retention 0.2) at STEPS: the core's plan
    want = pack.magcache.resolve("hunyuan_video", steps=STEPS, thresh=0.24, k=6, retention=0.2).plan()
    print("HunyuanVideo plan:", hv)
    assert "Plan (hunyuan_video, auto" in hv["text"] and hv["rows"] == ["cond"], hv
    assert hv["cells"] == STEPS and hv["skipped"] == len(want.cond_skipped) > 0, hv


# -- templates: layout and thumbnails in the real frontend ----------------------------------------
LAYOUT_JS = """(() => {
  const app = %s, c = app.canvas, g = app.graph;
  const LG = window.LiteGraph || window.comfyAPI?.litegraph?.LiteGraph;
  const th = LG?.NODE_TITLE_HEIGHT ?? 30, cv = c.canvas.getBoundingClientRect();
  const s = c.ds.scale, off = c.ds.offset, problems = [];
  const rects = g._nodes.map(n => [n, n.pos[0], n.pos[1] - th, n.size[0], n.size[1] + th]);
  for (let i = 0; i < rects.length; i++) for (let j = i + 1; j < rects.length; j++) {
    const [a, ax, ay, aw, ah] = rects[i], [b, bx, by, bw, bh] = rects[j];
    if (ax < bx + bw && bx < ax + aw && ay < by + bh && by < ay + ah)
      problems.push(`overlap: ${a.type}#${a.id} [${[ax, ay, aw, ah]}] and ${b.type}#${b.id} [${[bx, by, bw, bh]}]`);
  }
  for (const [n, x, y, w] of rects) {
    const sx = (x + off[0]) * s + cv.left, sy = (y + off[1]) * s + cv.top;
    if (sx >= innerWidth) continue;                       // right of the window: scrolled to later
    if (sy < cv.top) { problems.push(`${n.type}#${n.id}: title above the canvas (${Math.round(sy)} px)`); continue; }
    for (const fx of [0.1, 0.5, 0.9]) {
      const px = sx + fx * w * s, py = sy + 0.5 * th * s;
      if (px >= innerWidth || py >= innerHeight) continue;
      const e = document.elementFromPoint(px, py);
      if (e && e !== c.canvas && !c.canvas.parentElement?.contains(e) && e.closest('button, nav, header, [class*=menu], [class*=bar], [class*=breadcrumb], [class*=tab]'))
        problems.push(`${n.type}#${n.id}: title under ${String(e.className?.baseVal ?? e.className).slice(0, 60)} at ${Math.round(px)},${Math.round(py)}`);
    }
  }
  return {problems, version: window.__COMFYUI_FRONTEND_VERSION__ || null, scale: s, offset: off};
})()""" % APP


async def _templates_layout(server, exe, out_dir):
    report = {}
    async with _comfy_page(server, exe) as page:
        await asyncio.sleep(3)
        for slug, title in TEMPLATE_TITLES.items():
            await page.eval(f"""(async () => {{
                const r = await fetch('/api/workflow_templates/{PACK_FOLDER}/' + encodeURIComponent({json.dumps(title)}) + '.json');
                await {APP}.loadGraphData(await r.json(), true, true, {json.dumps(title)}); return true; }})()""")
            await asyncio.sleep(1.5)
            report[slug] = await page.eval(LAYOUT_JS)
            if slug.startswith("restoration"):
                await page.screenshot(out_dir / f"e2e_template_{slug}.png")
        # the templates browser shows the pack's thumbnails
        await page.eval(f"{APP}.extensionManager.command.execute('Comfy.BrowseTemplates')")
        await page.wait_for(f"document.body.innerText.includes('{PACK_FOLDER}')", timeout=20)
        await page.eval(CLICK_TEXT_JS % json.dumps([PACK_FOLDER]))
        await asyncio.sleep(2)
        await page.screenshot(out_dir / "e2e_templates_dialog.png")
        thumbs = await page.wait_for("""(() => {
            // 1.35 points the card at /api/workflow_templates/<pack>/<name>.jpg; 1.27 fetches it into a blob
            const imgs = [...document.querySelectorAll('[role=dialog] img, .p-dialog img')]
                .filter(i => i.src.includes('/workflow_templates/') || i.src.startsWith('blob:'));
            const done = imgs.filter(i => i.complete);    // cards out of view load lazily
            return done.length ? done.map(i => [decodeURIComponent(i.src.split('/').pop()), i.naturalWidth])
                : null; })()""",
                                     timeout=30)
        return report, thumbs


def test_templates_layout_and_thumbnails(server, chromium, out_dir):
    """Every template, as the frontend sizes its nodes: no two nodes (title bars included) overlap,
    and no title bar starts above the canvas or under the top bars or the side bar. The templates
    browser loads each template's <name>.jpg (a loaded image has a width)."""
    report, thumbs = asyncio.run(_templates_layout(server, chromium, out_dir))
    problems = [f"{slug}: {p}" for slug, r in report.items() for p in r["problems"]]
    print("frontend", next(iter(report.values()))["version"])
    assert not problems, "\n".join(problems)
    print("thumbnails:", thumbs)
    assert len(thumbs) >= 2 and all(w == 512 for _, w in thumbs), thumbs   # ours are 512 px wide
    named = {name for name, _ in thumbs if name.endswith(".jpg")}
    assert named <= {f"{t}.jpg" for t in TEMPLATE_TITLES.values()}, named
