"""ComfyUI workflows without a host: check UI-format JSON against node definitions, convert to API format.

Node definitions are ``/object_info`` entries (``tests/data/node_defs.json``, written by
``scripts/dump_node_defs.py``). The rules follow the ComfyUI frontend (v1.2x-1.3x):

* widget inputs are the INT/FLOAT/STRING/BOOLEAN/COMBO inputs without ``forceInput``, in
  ``input_order`` (required, then optional); ``widgets_values`` holds one value per widget, plus
  the "control after generate" value after INT inputs named ``seed``/``noise_seed`` or flagged
  ``control_after_generate``, plus the upload button's value after an ``*_upload`` combo;
* every other input is a socket and must be linked when required;
* a combo that lists files (marked ``atelier_file_list`` by the snapshot, whose options depend on
  the install) accepts any file name.
"""
import json
import pathlib

DEFS_PATH = pathlib.Path(__file__).resolve().parent / "data" / "node_defs.json"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
VIRTUAL = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
UPLOAD_KEYS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "upload")
MODEL_EXT = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".mp4", ".webm", ".mov",
             ".mkv", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".json", ".pkl")


def load_defs(path=DEFS_PATH):
    return json.loads(pathlib.Path(path).read_text())["nodes"]


# -- input specs ---------------------------------------------------------------------------------
def spec_type(spec):
    t = spec[0]
    return "COMBO" if isinstance(t, list) else t


def spec_opts(spec):
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_options(spec):
    return spec[0] if isinstance(spec[0], list) else spec_opts(spec).get("options", [])


def all_inputs(defn):
    """[(name, spec, required)] in the frontend's order."""
    order = defn.get("input_order") or {k: list(v) for k, v in defn["input"].items()}
    out = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            out.append((name, defn["input"][section][name], section == "required"))
    return out


def is_widget(spec):
    return spec_type(spec) in WIDGET_TYPES and not spec_opts(spec).get("forceInput")


def extra_values(name, spec):
    """Values the frontend stores after this widget's own value (control / upload widgets)."""
    o, t = spec_opts(spec), spec_type(spec)
    n = 0
    if t == "INT" and o.get("control_after_generate", name in ("seed", "noise_seed")):
        n += 1
    elif t in ("FLOAT", "COMBO") and o.get("control_after_generate"):
        n += 1
    return n


def has_upload(spec):
    return any(spec_opts(spec).get(k) for k in UPLOAD_KEYS)


def widget_slots(defn):
    """[(name, spec, required, n_extra)] for the widgets of a node."""
    return [(n, s, r, extra_values(n, s)) for n, s, r in all_inputs(defn) if is_widget(s)]


def map_widgets(defn, values):
    """{name: value} from a node's widgets_values; raises ValueError on a count mismatch."""
    slots = widget_slots(defn)
    need = sum(1 + e for *_, e in slots)
    uploads = sum(has_upload(s) for _, s, _, _ in slots)
    values = list(values or [])
    if not (need <= len(values) <= need + uploads):
        raise ValueError(f"{len(values)} widget values, expected {need}"
                         + (f" (+{uploads} upload)" if uploads else "") + f" for {[n for n, *_ in slots]}")
    out, i = {}, 0
    for name, spec, _, extra in slots:
        out[name] = values[i]
        i += 1 + extra
        if has_upload(spec) and len(values) > need and i < len(values):
            i += 1
    return out


def check_value(name, spec, v):
    """An error string or None for one widget value."""
    t, o = spec_type(spec), spec_opts(spec)
    if t == "COMBO":
        opts = combo_options(spec)
        if not spec_opts(spec).get("atelier_file_list"):
            return None if v in opts else f"{name}={v!r} not in {opts[:12]}"
        if not isinstance(v, str) or not v.lower().endswith(MODEL_EXT):
            return f"{name}={v!r} is not a file name"
        return None
    if t == "BOOLEAN":
        return None if isinstance(v, bool) else f"{name}={v!r} is not a boolean"
    if t == "STRING":
        return None if isinstance(v, str) else f"{name}={v!r} is not a string"
    if t == "INT" and (isinstance(v, bool) or not isinstance(v, int)):
        return f"{name}={v!r} is not an integer"
    if t == "FLOAT" and (isinstance(v, bool) or not isinstance(v, (int, float))):
        return f"{name}={v!r} is not a number"
    if "min" in o and v < o["min"]:
        return f"{name}={v} below min {o['min']}"
    if "max" in o and v > o["max"]:
        return f"{name}={v} above max {o['max']}"
    return None


def types_match(a, b):
    if "*" in (a, b):
        return True
    sa, sb = set(str(a).split(",")), set(str(b).split(","))
    return bool(sa & sb)


# -- validation ------------------------------------------------------------------------------------
def validate(wf, defs):
    """All problems of a UI-format workflow as a list of strings (empty when valid)."""
    errs = []
    nodes = {n["id"]: n for n in wf.get("nodes", [])}
    links = {}
    for link in wf.get("links", []):
        lid, src, sslot, dst, dslot, ltype = link[:6]
        links[lid] = link
        if src not in nodes or dst not in nodes:
            errs.append(f"link {lid}: node {src} or {dst} missing")
            continue
        s, d = nodes[src], nodes[dst]
        sdef = defs.get(s["type"])
        if sdef is not None:
            outs = sdef["output"]
            if sslot >= len(outs):
                errs.append(f"link {lid}: {s['type']} has no output {sslot}")
            elif not types_match(outs[sslot], ltype):
                errs.append(f"link {lid}: {s['type']} output {sslot} is {outs[sslot]}, link says {ltype}")
        dins = d.get("inputs", [])
        if dslot >= len(dins) or dins[dslot].get("link") != lid:
            errs.append(f"link {lid}: {d['type']} #{dst} input {dslot} does not refer back to it")
            continue
        ddef = defs.get(d["type"])
        if ddef is not None:
            iname = dins[dslot]["name"]
            specs = {n: s_ for n, s_, _ in all_inputs(ddef)}
            if iname not in specs:
                errs.append(f"link {lid}: {d['type']} has no input {iname!r}")
            elif not types_match(spec_type(specs[iname]), ltype):
                errs.append(f"link {lid}: {d['type']}.{iname} wants {spec_type(specs[iname])}, gets {ltype}")
    for nid, n in nodes.items():
        t = n["type"]
        where = f"{t} #{nid}"
        if t in VIRTUAL:
            continue
        if t not in defs:
            errs.append(f"{where}: unknown node type")
            continue
        if n.get("mode", 0) in (2, 4):
            continue
        defn = defs[t]
        linked = {i["name"] for i in n.get("inputs", []) if i.get("link") is not None}
        for i in n.get("inputs", []):
            if i.get("link") is not None and i["link"] not in links:
                errs.append(f"{where}: input {i['name']} refers to missing link {i['link']}")
        try:
            values = map_widgets(defn, n.get("widgets_values"))
        except ValueError as exc:
            errs.append(f"{where}: {exc}")
            values = {}
        for name, spec, required in all_inputs(defn):
            if is_widget(spec):
                if name in values and name not in linked:
                    e = check_value(name, spec, values[name])
                    if e:
                        errs.append(f"{where}: {e}")
            elif required and name not in linked:
                errs.append(f"{where}: required input {name!r} ({spec_type(spec)}) is not linked")
        for k, o in enumerate(n.get("outputs", [])):
            if k < len(defn["output"]) and not types_match(o.get("type"), defn["output"][k]):
                errs.append(f"{where}: output {k} declared {o.get('type')}, node gives {defn['output'][k]}")
    return errs


# -- UI -> API -------------------------------------------------------------------------------------
def to_api(wf, defs):
    """The API-format prompt ({id: {class_type, inputs}}) the frontend would queue for this workflow."""
    nodes = {n["id"]: n for n in wf["nodes"]}
    links = {link[0]: link for link in wf.get("links", [])}
    prompt = {}
    for nid, n in nodes.items():
        if n["type"] in VIRTUAL or n.get("mode", 0) in (2, 4):
            continue
        defn = defs[n["type"]]
        inputs = dict(map_widgets(defn, n.get("widgets_values")))
        for i in n.get("inputs", []):
            if i.get("link") is not None:
                link = links[i["link"]]
                inputs[i["name"]] = [str(link[1]), link[2]]
        prompt[str(nid)] = {"class_type": n["type"], "inputs": inputs,
                            "_meta": {"title": n.get("title") or defn.get("display_name", n["type"])}}
    return prompt


# -- building UI workflows (used by scripts/make_workflows.py) ---------------------------------------
# Template file names. Both frontends (1.27 and 1.35) title a custom node's template by its file name
# and show ``<name>.jpg`` from the same folder as its thumbnail, so the names are the readable titles.
TEMPLATE_TITLES = {
    "magcache_wan21_t2v": "MagCache - Wan2.1 text to video",
    "magcache_compare": "MagCache - full and cached runs compared",
    "magcache_calibrate": "MagCache - calibrate a curve for a new model",
    "magcache_flux": "MagCache - FLUX.1-dev text to image",
    "magcache_qwen_image": "MagCache - Qwen-Image text to image",
    "magcache_hunyuan_video": "MagCache - HunyuanVideo text to video",
    "magcache_wan22_a14b": "MagCache - Wan2.2 A14B with two experts",
    "nag_cfg1_fewstep": "NAG - negative prompt at cfg 1 with a few-step LoRA",
    "nag_magcache": "NAG and MagCache together",
    "nag_flux_cfg1": "NAG - Flux negative prompt at cfg 1",
    "nag_qwen_image": "NAG - Qwen-Image with a negative prompt at cfg 1",
    "nag_hunyuan_magcache": "NAG and MagCache - HunyuanVideo",
    "nag_wan22": "NAG - Wan2.2 A14B both experts",
    "dloral_video_upscale": "DLoRAL - one-step video upscale x4",
    "restoration_scan_to_print": "Restoration - scan to print layers and record",
    "restoration_sample": "Restoration - bundled sample painting",
}
WORKFLOW_DIR = pathlib.Path(__file__).resolve().parents[1] / "example_workflows"
TITLE_HEIGHT = 30          # LiteGraph's NODE_TITLE_HEIGHT: a node's title bar sits above its pos
VIEW_SCALE = 0.8           # the zoom a template opens at (extra.ds)
VIEW_MARGIN = (100, 140)   # screen px left of / above the graph when it opens: clear of the side bar
#                            (about 60 px) and of the top bars (at most about 90 px in 1.27 and 1.35)


def template_path(slug):
    """The UI workflow file of a template, by its short name (a key of ``TEMPLATE_TITLES``)."""
    return WORKFLOW_DIR / f"{TEMPLATE_TITLES[slug]}.json"


def node_rect(n):
    """``(x0, y0, x1, y1)`` of a UI node in canvas units, its title bar included."""
    x, y = n["pos"]
    w, h = n["size"]
    return x, y - TITLE_HEIGHT, x + w, y + h


def overlaps(wf, gap=0):
    """Pairs of node ids whose rectangles (title bars included) overlap or are closer than ``gap``."""
    rects = [(n["id"], node_rect(n)) for n in wf["nodes"]]
    return [(a, b) for i, (a, ra) in enumerate(rects) for b, rb in rects[i + 1:]
            if ra[0] < rb[2] + gap and rb[0] < ra[2] + gap and ra[1] < rb[3] + gap and rb[1] < ra[3] + gap]


def opening_view(nodes):
    """``extra.ds`` that opens the graph with its top-left corner ``VIEW_MARGIN`` px inside the
    canvas (screen = (canvas + offset) * scale), so no title bar starts under the top bars."""
    x0 = min(node_rect(n)[0] for n in nodes)
    y0 = min(node_rect(n)[1] for n in nodes)
    return {"scale": VIEW_SCALE, "offset": [VIEW_MARGIN[0] / VIEW_SCALE - x0, VIEW_MARGIN[1] / VIEW_SCALE - y0]}
class Builder:
    """Builds a UI-format workflow from node definitions: defaults filled in, links consistent."""

    def __init__(self, defs):
        self.defs, self.nodes, self.links = defs, [], []

    def node(self, type_, pos, widgets=None, title=None, size=None):
        nid = len(self.nodes) + 1
        widgets = dict(widgets or {})
        if type_ in ("Note", "MarkdownNote"):
            n = {"id": nid, "type": type_, "pos": list(pos), "size": list(size or [420, 220]), "flags": {},
                 "order": nid - 1, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                 "widgets_values": [widgets.pop("text")], "color": "#432", "bgcolor": "#653"}
            self.nodes.append(n)
            return nid
        defn = self.defs[type_]
        values = []
        for name, spec, _, extra in widget_slots(defn):
            if name in widgets:
                v = widgets.pop(name)
            else:
                o = spec_opts(spec)
                v = o.get("default")
                if v is None:
                    v = (combo_options(spec) or [""])[0] if spec_type(spec) == "COMBO" else \
                        {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[spec_type(spec)]
            values.append(v)
            values.extend(["fixed"] * extra)
            if has_upload(spec):
                values.append("image")
        if widgets:
            raise KeyError(f"{type_} has no widgets {sorted(widgets)}")
        inputs = [{"name": n_, "type": spec_type(s), "link": None}
                  for n_, s, _ in all_inputs(defn) if not is_widget(s)]
        names = defn.get("output_name") or defn["output"]
        outputs = [{"name": nm, "type": t, "links": [], "slot_index": k}
                   for k, (nm, t) in enumerate(zip(names, defn["output"]))]
        n = {"id": nid, "type": type_, "pos": list(pos), "size": list(size or [320, 120]), "flags": {},
             "order": nid - 1, "mode": 0, "inputs": inputs, "outputs": outputs,
             "properties": {"Node name for S&R": type_}, "widgets_values": values}
        if title:
            n["title"] = title
        self.nodes.append(n)
        return nid

    def link(self, src, out, dst, inp):
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        sdef = self.defs[s["type"]]
        names = sdef.get("output_name") or sdef["output"]
        slot = out if isinstance(out, int) else list(names).index(out)
        dslot = next((k for k, i in enumerate(d["inputs"]) if i["name"] == inp), None)
        if dslot is None:  # a widget turned into a socket, as the frontend does when a link is dropped on it
            spec = {n_: s_ for n_, s_, _ in all_inputs(self.defs[d["type"]])}[inp]
            d["inputs"].append({"name": inp, "type": spec_type(spec), "widget": {"name": inp}, "link": None})
            dslot = len(d["inputs"]) - 1
        lid = len(self.links) + 1
        ltype = sdef["output"][slot]
        self.links.append([lid, src, slot, dst, dslot, ltype])
        s["outputs"][slot]["links"].append(lid)
        d["inputs"][dslot]["link"] = lid
        return lid

    def wire(self, dst, **inputs):
        """Link each named input of node ``dst`` from its ``(node, output)`` pair, in the order given."""
        for inp, (src, out) in inputs.items():
            self.link(src, out, dst, inp)

    def to_json(self):
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {}, "extra": {"ds": opening_view(self.nodes)},
                "version": 0.4}
