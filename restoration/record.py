"""Archival record (spec 4.5): manifest.json and a human-readable index.html with thumbnails."""

from __future__ import annotations

import pathlib
from typing import Any, List, Mapping, Optional, Sequence, Tuple
import datetime
import html
import json
import platform

from .fileio import sha256_file, write_bytes

SCHEMA = "atelier-restoration-record/1"


def versions() -> dict:
    """Package versions relevant to reproducing the record."""
    out: dict = {"python": platform.python_version()}
    for name in ("torch", "numpy", "scipy", "cv2", "kornia", "tifffile", "PIL"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "?")
        except Exception:
            out[name] = None
    try:
        from importlib.metadata import version
        out["atelier"] = version("atelier")
    except Exception:
        out["atelier"] = _pack_version()
    return out


def _pack_version():
    import pathlib
    import re
    p = pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        m = re.search(r'^version\s*=\s*"([^"]+)"', p.read_text(), re.M)
        return m.group(1) if m else "?"
    except OSError:
        return "?"


def file_entry(out_dir: Any, name: str, **meta: Any) -> dict:
    return dict(path=name, sha256=sha256_file(f"{out_dir}/{name}"), **meta)


def write_record(out_dir: Any, manifest: dict, thumbs: Sequence[Tuple[str, str]], rows: Sequence[dict], max_rows: int = 2000
                 ) -> dict:
    """Write ``manifest.json`` and ``index.html`` (thumbnails are file names inside out_dir).

    ``manifest`` must hold the sections of spec 4.5; ``rows`` is the region table (the HTML lists the
    first ``max_rows``; regions.csv / regions.json always have all of them).
    """
    manifest = dict(manifest)
    manifest.setdefault("schema", SCHEMA)
    manifest.setdefault("created_utc", datetime.datetime.now(datetime.timezone.utc).isoformat())
    write_bytes(out_dir, "manifest.json", json.dumps(manifest, indent=1, default=_json_default))
    write_bytes(out_dir, "index.html", render_html(manifest, thumbs, rows, max_rows))
    return manifest


def _json_default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def render_html(m: Mapping[str, Any], thumbs: Sequence[Tuple[str, str]], rows: Sequence[dict], max_rows: int = 2000) -> str:
    e = lambda v: html.escape(str(v))
    st = m.get("stats", {})
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Restoration record</title><style>"
             "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #bbb;padding:2px 6px}figure{display:inline-block;margin:6px;vertical-align:top}"
             "img{max-width:420px;border:1px solid #999}.sw{display:inline-block;width:14px;height:14px;border:1px solid #333}"
             "</style></head><body>",
             f"<h1>Film-mask restoration record</h1><p>Schema {e(m.get('schema'))}, created {e(m.get('created_utc'))}. "
             f"Input <code>{e(m.get('capture', {}).get('file'))}</code>, sha256 <code>{e(m.get('capture', {}).get('sha256'))}</code>, "
             f"{e(m.get('capture', {}).get('ppi'))} ppi.</p>",
             *_lossy_html(m.get("capture", {}), e),
             "<h2>Summary</h2><table>"]
    for k in ("n_regions", "n_regions_filled", "n_regions_for_review", "n_regions_skipped_by_reason", "total_fill_area_mm2",
              "count_rgb8", "count_dE1", "bit_depth_counted", "wallclock_s"):
        if k in st:
            parts.append(f"<tr><th>{e(k)}</th><td>{e(st[k])}</td></tr>")
    parts.append("</table>")
    parts.extend(_review_html(m.get("review"), rows, e))
    parts.append("<h2>Images</h2>")
    for name, caption in thumbs:
        parts.append(f"<figure><a href='{e(name)}'><img src='{e(name)}'></a><figcaption>{e(caption)}</figcaption></figure>")
    pal = m.get("palette", [])
    if pal:
        parts.append(f"<h2>Palette (ΔE00-merged leaders, top {len(pal)} by area)</h2><p>")
        for c in pal:
            parts.append(f"<span class='sw' title='{e(c['rgb8'])} x{e(c['pixels'])}' "
                         f"style='background:rgb({c['rgb8'][0]},{c['rgb8'][1]},{c['rgb8'][2]})'></span>")
        parts.append("</p>")
    parts.append("<h2>Print</h2><pre>" + e(json.dumps(m.get("print", {}), indent=1, default=_json_default)) + "</pre>")
    parts.append("<h2>Files</h2><table><tr><th>path</th><th>sha256</th><th>info</th></tr>")
    for f in m.get("files", []):
        info = {k: v for k, v in f.items() if k not in ("path", "sha256")}
        parts.append(f"<tr><td><a href='{e(f['path'])}'>{e(f['path'])}</a></td><td><code>{e(f['sha256'])}</code></td><td>{e(info)}</td></tr>")
    parts.append("</table>")
    parts.append(f"<h2>Regions ({len(rows)}; full table in regions.csv)</h2><table><tr>")
    cols = ["id", "class", "fill_decision", "rule", "confidence", "reasons", "skip_reason", "area_mm2", "bbox_mm",
            "centroid_mm", "max_width_mm", "dE00_contrast", "dE00_edge", "fill_method", "generative", "needs_review"]
    parts.append("".join(f"<th>{c}</th>" for c in cols) + "</tr>")
    for r in rows[:max_rows]:
        parts.append("<tr>" + "".join(f"<td>{e(_cell(r.get(c, '')))}</td>" for c in cols) + "</tr>")
    parts.append("</table>")
    parts.append("<h2>Processing</h2><pre>" + e(json.dumps(m.get("processing", {}), indent=1, default=_json_default)[:20000]) + "</pre>")
    if m.get("workflow_file"):
        parts.append(f"<p>ComfyUI workflow: <a href='{e(m['workflow_file'])}'>{e(m['workflow_file'])}</a></p>")
    parts.append("<h2>Application (to be filled in by the conservator)</h2><pre>"
                 + e(json.dumps(m.get("application", {}), indent=1)) + "</pre></body></html>")
    return "\n".join(parts)


def _lossy_html(cap, e):
    """A warning under the title when the scan was stored with lossy compression (JPEG, ...)."""
    if not cap.get("lossy"):
        return []
    return [f"<p style='border:2px solid #c60;background:#fff3e0;padding:6px'><b>Lossy input:</b> the scan is "
            f"{e(cap.get('format') or 'a lossy format')} (lossy compression). Compression artefacts may have been "
            "taken for damage or copied into the fill; for print, rescan as TIFF or PNG.</p>"]


def _cell(v):
    """A table cell's text: numbers of a list by spaces, phrases (reasons) by '; ', numpy scalars as numbers."""
    if isinstance(v, (list, tuple)):
        return ("; " if any(isinstance(x, str) for x in v) else " ").join(str(_cell(x)) for x in v)
    return v.item() if hasattr(v, "item") else v


def _review_html(rv, rows, e):
    """The record's review section: what waits for a person, what was accepted or rejected, the settings."""
    if not rv:
        return []
    c = rv.get("config", {})
    out = [f"<h2>Review before print</h2><p>Filled by default: confident regions of the fill classes no larger than "
           f"{e(c.get('max_fill_mm2'))} mm^2 and {100 * float(c.get('max_fill_share') or 0):.4g} % of the picture, "
           f"with confidence "
           f"&ge; {e(c.get('min_confidence'))}. Accepted ids: <b>{e(rv.get('accepted') or 'none')}</b>; rejected ids: "
           f"<b>{e(rv.get('rejected') or 'none')}</b>. Decisions by rule: {e(rv.get('summary', {}).get('by_rule'))}.</p>"]
    wait = [r for r in rows if r.get("fill_decision") == "review"]
    out.append(f"<p><b>{len(wait)} regions wait for review and were NOT filled</b> (orange in the fill preview); "
               "accept them by id (node input accept_ids, CLI --accept) or by mask to fill them.</p>")
    if wait:
        cols = ["id", "class", "rule", "confidence", "reasons", "area_mm2", "centroid_mm", "bbox_mm"]
        out.append("<table><tr>" + "".join(f"<th>{k}</th>" for k in cols) + "</tr>")
        for r in wait[:2000]:
            out.append("<tr>" + "".join(f"<td>{e(_cell(r.get(k, '')))}</td>" for k in cols) + "</tr>")
        out.append("</table>")
    return out


def load_manifest(path: Any) -> Tuple[dict, pathlib.Path]:
    """Read a record's ``manifest.json`` (``path``: the record folder or the file) for a replay.

    Returns ``(manifest dict, record folder)``. ValueError with one line naming the problem when the
    file is missing or not JSON, or a section a replay needs is absent (``files`` must be a non-empty
    list; ``processing.config`` and ``capture`` objects). Every field is then checked by
    :func:`restoration.recordcheck.check_manifest`.
    """
    import pathlib
    p = pathlib.Path(path)
    mpath = p / "manifest.json" if p.is_dir() else p
    try:
        man = json.loads(mpath.read_text())
    except OSError as exc:
        raise ValueError(f"record {str(path)!r}: no readable manifest.json ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ValueError(f"record {str(mpath)!r}: manifest.json is not valid JSON ({exc})") from None
    where = f"record {str(mpath)!r}"
    if not isinstance(man, dict):
        raise ValueError(f"{where}: manifest.json must hold an object, got {type(man).__name__}")
    files = man.get("files")
    if not isinstance(files, list) or not files:
        raise ValueError(f"{where}: the manifest lists no files ('files' is "
                         f"{'empty' if isinstance(files, list) else 'missing or not a list'}); nothing to compare")
    for sect in ("processing", "capture"):
        if not isinstance(man.get(sect), dict):
            raise ValueError(f"{where}: section '{sect}' is missing or not an object")
    if not isinstance(man["processing"].get("config"), dict):
        raise ValueError(f"{where}: processing.config is missing or not an object")
    if not isinstance(man["processing"].get("user_mask", {}), dict):
        raise ValueError(f"{where}: processing.user_mask must be an object")
    return man, mpath.parent
