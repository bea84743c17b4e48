// Atelier frontend extension (plain ES module, no build step).
//
// * Atelier MagCache (every family): a step strip on the node. Before a run it shows the planned schedule
//   (GET /atelier/magcache/schedule with the node's widget values, the family the node reported, and for "auto" on Wan the model config
//   the node reported when it ran, so the preview uses the detected curve); after a run it shows, per branch,
//   which steps computed (C) or reused the cache (S), with computed/total calls and the time saved,
//   from the server event "atelier.magcache.report".
// * Atelier restoration nodes: a caption over the previews the node returned ({"ui": {"images"}}),
//   naming what each preview shows.
// The strip is a DOM widget (class "atelier-step-strip"), so tests can find it in the page.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const MAGCACHE = "AtelierMagCacheWan";
const REPORT_EVENT = "atelier.magcache.report";
const STRIP_WIDGET = "atelier_step_strip";

const STYLE = `
.atelier-step-strip { font: 11px/1.35 ui-monospace, monospace; color: #ddd; background: #1c1c1c;
  border: 1px solid #444; border-radius: 4px; padding: 4px 6px; box-sizing: border-box; overflow: hidden; }
.atelier-step-strip .atl-head { color: #9cf; margin-bottom: 3px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.atelier-step-strip .atl-row { display: flex; align-items: center; gap: 4px; margin: 2px 0; }
.atelier-step-strip .atl-label { width: 46px; flex: none; color: #aaa; }
.atelier-step-strip .atl-cells { display: flex; flex: 1; gap: 1px; min-width: 0; }
.atelier-step-strip .atl-cell { flex: 1; height: 12px; min-width: 2px; border-radius: 1px; }
.atelier-step-strip .atl-C { background: #3b82f6; }
.atelier-step-strip .atl-S { background: #22c55e; }
.atelier-step-strip .atl-dot { background: #555; }
.atelier-step-strip.atl-plan .atl-C { background: #3b82f680; }
.atelier-step-strip.atl-plan .atl-S { background: #22c55e80; }
.atelier-step-strip .atl-foot { color: #ccc; margin-top: 3px; white-space: normal; }
.atelier-step-strip .atl-legend { color: #888; }
.atelier-preview-caption { font: 11px/1.3 sans-serif; color: #ddd; background: #222a; padding: 2px 6px; }
`;

function injectStyle() {
  if (document.getElementById("atelier-style")) return;
  const s = document.createElement("style");
  s.id = "atelier-style";
  s.textContent = STYLE;
  document.head.appendChild(s);
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// Render marks {branch: ["C","S",...]} into the strip element.
export function renderStrip(root, { title, branches, foot, plan }) {
  root.replaceChildren();
  root.classList.toggle("atl-plan", !!plan);
  root.dataset.state = plan ? "plan" : "run";
  root.appendChild(el("div", "atl-head", title));
  for (const [name, marks] of Object.entries(branches || {})) {
    const row = el("div", "atl-row");
    row.dataset.branch = name;
    row.appendChild(el("span", "atl-label", name));
    const cells = el("div", "atl-cells");
    marks.forEach((m, i) => {
      const c = el("span", "atl-cell " + (m === "C" ? "atl-C" : m === "S" ? "atl-S" : "atl-dot"));
      c.title = `step ${i}: ${m === "C" ? "computed" : m === "S" ? "skipped (cache reused)" : "not run"}`;
      cells.appendChild(c);
    });
    row.appendChild(cells);
    root.appendChild(row);
  }
  const f = el("div", "atl-foot", foot || "");
  f.appendChild(el("div", "atl-legend", "blue = computed, green = skipped (cache reused)"));
  root.appendChild(f);
}

function planMarks(steps, skipped) {
  const s = new Set(skipped || []);
  return Array.from({ length: steps }, (_, i) => (s.has(i) ? "S" : "C"));
}

// What the strip shows of a plan (the route's JSON): a row per branch the family's curve has (FLUX and
// HunyuanVideo: one, "cond", their embedded guidance runs no uncond call; the others: cond and uncond).
export function planStrip(s) {
  if (s.record) {   // a family with no shipped curve ("auto"): the node's first full run records it
    return { plan: true, title: `Plan: ${s.title ?? s.family} has no shipped curve`,
             foot: "The first full run records it (every call computes); later runs use it." };
  }
  const one = s.branches === 1;
  const split = s.split_step === null || s.split_step === undefined ? "" :
    `; Wan2.2 ${s.split_mode} rule, low-noise from step ${s.split_step}`;
  return {
    plan: true,
    title: `Plan (${s.preset}${s.detected ? ", auto" : ""}, ${s.steps} steps): skips ` +
           (one ? `${s.cond_skipped.length}` : `${s.cond_skipped.length} cond, ${s.uncond_skipped.length} uncond`),
    branches: one ? { cond: planMarks(s.steps, s.cond_skipped) } :
      { cond: planMarks(s.steps, s.cond_skipped), uncond: planMarks(s.steps, s.uncond_skipped) },
    foot: `computes ${s.computed_calls}/${s.total_calls} calls (ideal ${s.expected_speedup.toFixed(2)}x)${split}` +
          (s.target ? `; target ${s.target.target_speedup}x: thresh ${s.target.thresh}, K ${s.target.k}, ` +
                      `error ${s.target.error.toFixed(3)}` : "") +
          (s.cond_skipped.length + s.uncond_skipped.length === 0 ? " - skips nothing at this setting" : ""),
  };
}

function ensureStrip(node) {
  if (node.__atelierStrip) return node.__atelierStrip;
  injectStyle();
  const div = el("div", "atelier-step-strip");
  div.dataset.node = String(node.id);
  let widget = null;
  if (typeof node.addDOMWidget === "function") {
    widget = node.addDOMWidget(STRIP_WIDGET, "atelier-strip", div, {
      serialize: false, hideOnZoom: false, getMinHeight: () => 96, getHeight: () => 96,
    });
    if (widget) widget.serialize = false;   // never adds a widgets_values entry
  }
  node.__atelierStrip = div;
  return div;
}

// The model loader upstream of a node's "model" input (through LoRA, ModelSampling... nodes): its file
// widget, {unet_name: ...} or {ckpt_name: ...}, or null.
function loaderFile(node) {
  let n = node;
  for (let hop = 0; n && hop < 16; hop++) {
    for (const name of ["unet_name", "ckpt_name"]) {
      const w = n.widgets?.find((x) => x.name === name);
      if (w && typeof w.value === "string" && w.value) return { [name]: w.value };
    }
    const slot = (n.inputs || []).findIndex((i) => i.type === "MODEL" || i.name === "model");
    if (slot < 0 || typeof n.getInputNode !== "function") return null;
    n = n.getInputNode(slot);
  }
  return null;
}

// Query of GET /atelier/magcache/schedule: the node's widgets and, for preset "auto", the model config the
// node reported when it last ran (dim, in_dim, model_type) or else the loader's file (the server reads its
// header), so the server resolves the curve the node will use.
export function planQuery(node) {
  // Query parameter -> the node widget it reads. A widget the node lacks is left out: the route takes that
  // setting's default from the pack's settings table, so no default is written here.
  const PARAMS = [["preset", "preset"], ["steps", "preview_steps"], ["thresh", "thresh"], ["k", "k"],
                  ["retention", "retention"], ["start_step", "start_step"], ["end_step", "end_step"],
                  ["protect_last", "protect_last"], ["schedule_steps", "schedule_steps"],
                  ["target_speedup", "target_speedup"]];
  const q = {};
  for (const [param, name] of PARAMS) {
    const w = node.widgets?.find((x) => x.name === name);
    if (w !== undefined) q[param] = w.value;
  }
  const m = node.__atelierModel;
  if (m?.family !== undefined && m.family !== "wan") q.family = m.family;   // another family: its curve, no dims
  const auto = (q.preset ?? "auto") === "auto";
  if (auto) {   // what the graph decides for "auto", as the run does (the route reads these only for "auto")
    const running = (app.graph?._nodes || []).filter((n) => (n.mode ?? 0) === 0);
    // reference latents: a FLUX model runs as FLUX.1-Kontext
    const refs = running.filter((n) => n.comfyClass === "ReferenceLatent");
    if (refs.length) q.reference_latents = refs.length;
    // the empty latent's height, when the graph has one: HunyuanVideo's 544p curve
    const heights = new Set(running.filter((n) => /^Empty.*Latent/.test(n.comfyClass || ""))
      .map((n) => n.widgets?.find((w) => w.name === "height")?.value).filter((v) => typeof v === "number"));
    if (heights.size === 1) q.height = [...heights][0];
  }
  if (auto && q.family === undefined) {
    if (!m || m.dim === undefined) {
      const file = loaderFile(node);
      return file ? new URLSearchParams({ ...q, ...file }) : null;
    }
    q.dim = m.dim;
    if (m.in_dim !== undefined) q.in_dim = m.in_dim;
    if (m.model_type !== undefined) q.model_type = m.model_type;
  }
  return new URLSearchParams(q);
}

async function refreshPlan(node) {
  const div = ensureStrip(node);
  if (node.__atelierModel?.preset === "record" && !node.__atelierHasRun) {   // no shipped curve for the family
    renderStrip(div, planStrip({ record: true, family: node.__atelierModel.family }));
    node.setDirtyCanvas?.(true, true);
    return;
  }
  const q = planQuery(node);
  if (q === null) {
    if (!node.__atelierHasRun) {
      renderStrip(div, { plan: true, title: "Plan: 'auto' picks the curve from the model",
                         foot: "Connect a model loader, run the workflow once, or pick a preset to preview." });
    }
    node.setDirtyCanvas?.(true, true);
    return;
  }
  try {
    const r = await api.fetchApi(`/atelier/magcache/schedule?${q}`);
    const s = await r.json();
    // an error is a 400 with {"error", "param"}; a plan has its own numeric "error" (the accumulated error)
    if (!r.ok) throw new Error(s.error || r.statusText);
    if (node.__atelierHasRun) return;   // a real run's strip wins over the plan
    renderStrip(div, planStrip(s));
    node.__atelierRetries = 0;
  } catch (err) {
    if (!node.__atelierHasRun) renderStrip(div, { plan: true, title: "Plan unavailable", foot: String(err) });
    // the loader's file may change without touching this node (a template's model swapped): try again
    if ((node.__atelierRetries = (node.__atelierRetries || 0) + 1) <= 30) setTimeout(() => refreshPlan(node), 2000);
  }
  node.setDirtyCanvas?.(true, true);
}

function findNode(id) {
  const g = app.graph;
  if (!g) return null;
  const s = String(id);
  let n = g.getNodeById?.(Number(s)) ?? g.getNodeById?.(s);
  if (!n && s.includes(":")) n = g.getNodeById?.(Number(s.split(":").pop()));   // inside a subgraph
  return n || null;
}

function onReport(ev) {
  const p = ev.detail || {};
  const node = findNode(p.node);
  if (!node || node.comfyClass !== MAGCACHE) return;
  node.__atelierHasRun = true;
  const saved = typeof p.time_saved_s === "number" ? `${p.time_saved_s.toFixed(2)} s saved` : "";
  const speed = typeof p.speedup === "number" ? `, ${p.speedup.toFixed(2)}x` : "";
  renderStrip(ensureStrip(node), {
    plan: false,
    title: `Last run: ${p.computed_calls}/${p.total_calls} calls computed` + (p.interrupted ? " (interrupted)" : ""),
    branches: p.branches,
    foot: (p.summary || `${saved}${speed}`) + (p.curve_source ? `; curve: ${p.curve_source}` : ""),
  });
  node.setDirtyCanvas?.(true, true);
}

// Captions for restoration previews: what each returned image shows (the node may send "captions").
function onRestorationExecuted(node, output) {
  if (!output) return;
  const caps = output.atelier_captions || output.captions;
  const n = (output.images || []).length;
  if (!n && !caps) return;
  injectStyle();
  let div = node.__atelierCaption;
  if (!div) {
    div = el("div", "atelier-preview-caption atelier-restoration-preview");
    if (typeof node.addDOMWidget === "function") {
      const w = node.addDOMWidget("atelier_preview_caption", "atelier-caption", div,
        { serialize: false, getMinHeight: () => 22 });
      if (w) w.serialize = false;
    }
    node.__atelierCaption = div;
  }
  const text = Array.isArray(caps) ? caps.join(" | ") : (caps || "");
  div.textContent = `${n} preview${n === 1 ? "" : "s"}${text ? ": " + text : ""}`;
  div.dataset.count = String(n);
}

app.registerExtension({
  name: "atelier.ui",
  setup() {
    api.addEventListener(REPORT_EVENT, onReport);
    window.__atelierUI = { loaded: true };   // lets tests and users check the extension loaded
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name === MAGCACHE) {
      const created = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const r = created?.apply(this, arguments);
        ensureStrip(this);
        let timer = null;
        const schedule = () => { clearTimeout(timer); timer = setTimeout(() => refreshPlan(this), 250); };
        for (const w of this.widgets || []) {
          if (w.name === STRIP_WIDGET) continue;
          const cb = w.callback;
          w.callback = function () { const out = cb?.apply(this, arguments); schedule(); return out; };
        }
        schedule();
        return r;
      };
      const executed = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (output) {
        const r = executed?.apply(this, arguments);
        const info = output?.atelier_magcache?.[0];   // the model config the node resolved "auto" with
        if (info) { this.__atelierModel = info; refreshPlan(this); }
        return r;
      };
      const connections = nodeType.prototype.onConnectionsChange;
      nodeType.prototype.onConnectionsChange = function () {
        const r = connections?.apply(this, arguments);
        setTimeout(() => refreshPlan(this), 300);   // another model loader upstream
        return r;
      };
      const configure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        const r = configure?.apply(this, arguments);
        setTimeout(() => refreshPlan(this), 300);   // widget values are restored after creation
        return r;
      };
    } else if (nodeData?.name?.startsWith("AtelierRestoration") || nodeData?.category?.startsWith("Atelier/Restoration")) {
      const executed = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (output) {
        const r = executed?.apply(this, arguments);
        onRestorationExecuted(this, output);
        return r;
      };
    }
  },
});
