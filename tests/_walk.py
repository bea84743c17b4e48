"""Walk every numeric and choice input of every pack node through the host's real validation path.

The prompts are the bundled example workflows in API form (``_e2e.tiny_prompt``); a pack node that no
workflow holds is spliced into one: its link inputs are wired to nodes of that prompt with a matching output
type and its first output goes to the host's ``PreviewAny`` (an output node), so the host validates it.
Each case changes one input of one node and posts the prompt to ``/prompt``: the server must answer 400 with
an error for that node that names the input, and queue nothing.

Cases per input (specs from the live server's ``/object_info``):
* INT / FLOAT with bounds: ``min - eps``, ``max + eps``, a wrong type (a word);
* COMBO: a value not among the options, a wrong type (a number);
* any required input: missing.
BOOLEAN and STRING values have no wrong type here: the host turns any value into one (``bool(v)``,
``str(v)``) before a node sees it.
"""
import copy
import json

from _e2e import tiny_prompt
from _workflows import TEMPLATE_TITLES, template_path

WIDGET_TYPES = ("INT", "FLOAT", "BOOLEAN", "STRING", "COMBO")


def _spec(info, name):
    for section in ("required", "optional"):
        if name in info["input"].get(section, {}):
            return section, info["input"][section][name]
    return None, None


def _kind(spec):
    t = spec[0]
    return "COMBO" if isinstance(t, list) else t


def _options(spec):
    return spec[0] if isinstance(spec[0], list) else spec[1].get("options", [])


def pack_prompts(defs, object_info, is_pack):
    """``{class_type: (prompt, node_id)}``: one API prompt holding each pack node type, built from the
    example workflows (nodes no workflow holds are spliced in, see the module docstring)."""
    prompts = {}
    for slug in TEMPLATE_TITLES:
        api = tiny_prompt(json.loads(template_path(slug).read_text()), defs)
        for nid, node in api.items():
            t = node["class_type"]
            if is_pack(t) and t not in prompts:
                prompts[t] = (api, nid)
    for t in sorted(k for k in object_info if is_pack(k) and k not in prompts):
        spliced = _splice(t, object_info, [p for p, _ in prompts.values()])
        if spliced is not None:
            prompts[t] = spliced
    return prompts


#: A host node that makes a missing input type from one the prompt has: type -> (class, input, from type,
#: output index).
ADAPTERS = {"IMAGE": ("GetVideoComponents", "video", "VIDEO", 0)}


def _splice(t, object_info, candidates):
    info = object_info[t]
    for api in candidates:
        api = copy.deepcopy(api)
        producers = {}
        for nid, node in api.items():
            for i, out in enumerate(object_info[node["class_type"]].get("output", [])):
                producers.setdefault(out, [nid, i])
        for kind, (cls, inp, src, index) in ADAPTERS.items():
            if kind not in producers and src in producers and cls in object_info:
                api["adapter_" + kind] = {"class_type": cls, "inputs": {inp: producers[src]}}
                producers[kind] = ["adapter_" + kind, index]
        inputs, ok = {}, True
        for name, spec in info["input"].get("required", {}).items():
            kind = _kind(spec)
            if kind in WIDGET_TYPES:
                inputs[name] = spec[1].get("default", _options(spec)[0] if kind == "COMBO" else None)
            elif kind in producers:
                inputs[name] = producers[kind]
            else:
                ok = False
                break
        if not ok or not info.get("output"):
            continue
        nid = "9" * 6
        api[nid] = {"class_type": t, "inputs": inputs}
        api[nid + "1"] = {"class_type": "PreviewAny", "inputs": {"source": [nid, 0]}}
        return api, nid
    return None


def _ancestors(api, nid):
    seen, todo = set(), [nid]
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        todo += [v[0] for v in api[n]["inputs"].values() if isinstance(v, list) and len(v) == 2 and v[0] in api]
    return seen


def isolate(api, nid, object_info):
    """The part of ``api`` that node ``nid`` needs, with one output node reading it: ``nid`` itself when it
    is an output node, else a ``PreviewAny`` of its first output. The host runs every output that passes
    validation, so a prompt with other outputs would still queue and run them; this one holds nothing else."""
    keep = {k: copy.deepcopy(api[k]) for k in _ancestors(api, nid)}
    if not object_info[api[nid]["class_type"]].get("output_node"):
        keep[nid + "_preview"] = {"class_type": "PreviewAny", "inputs": {"source": [nid, 0]}}
    return keep


def cases(api, nid, object_info):
    """``(input name, what, prompt)`` for every bad value of every widget input of node ``nid``, each in a
    prompt holding only ``nid``'s chain (:func:`isolate`)."""
    api = isolate(api, nid, object_info)
    node = api[nid]
    info = object_info[node["class_type"]]
    for name, value in node["inputs"].items():
        if isinstance(value, list):          # a link
            continue
        section, spec = _spec(info, name)
        if spec is None:
            continue
        kind, extra = _kind(spec), spec[1] if len(spec) > 1 else {}
        bad = []
        if kind in ("INT", "FLOAT"):
            eps = 1 if kind == "INT" else max(float(extra.get("step") or 0.01), 1e-3)
            if "min" in extra:
                bad.append(("below min", extra["min"] - eps))
            if "max" in extra:
                bad.append(("above max", extra["max"] + eps))
            bad.append(("wrong type", "not-a-number"))
        elif kind == "COMBO":
            bad.append(("not an option", "atelier-no-such-option"))
            bad.append(("wrong type", 12345))
        for what, v in bad:
            p = copy.deepcopy(api)
            p[nid]["inputs"][name] = v
            yield name, f"{what} ({v!r})", p
        if section == "required":
            p = copy.deepcopy(api)
            del p[nid]["inputs"][name]
            yield name, "missing", p


def names_input(node_errors, nid, name):
    """Whether the server's errors for node ``nid`` name ``name``: a host check's ``input_name``, or a
    ``validate_inputs`` message (``details`` = ``input - message``) whose message is about ``name``."""
    errors = (node_errors.get(nid) or {}).get("errors", [])
    for e in errors:
        if e.get("type") == "custom_validation_failed":
            message = e.get("details", "").split(" - ", 1)[-1]
            if message.startswith(name + " ") or message.startswith(name + ":") or f"'{name}'" in message:
                return True
        elif (e.get("extra_info") or {}).get("input_name") == name:
            return True
    return False
