"""A record's manifest read back for ``--replay``: every field the replay uses is checked by type and value
before any work, and a bad one is named by where it is in the manifest::

    manifest field 'processing.config.tile': 12.5 is not an integer; use an integer in [0, 16384]

Rules, one per kind of field:

* a setting (``processing.config`` fields that are records of :data:`restoration.settings.SETTINGS`, e.g.
  ``tile``, ``margin_mm``, ``detect.crack_low``; ``fill_method`` is the ``method`` record, ``white_amount_mm``
  the ``amount_mm`` one) by its record -- the message is the record's, without its CLI label;
* the method's constants (the other fields of :class:`~restoration.detect.DetectConfig`,
  :class:`~restoration.regions.RegionConfig`, :class:`~restoration.review.ReviewConfig`,
  :class:`~restoration.pipeline.PipelineConfig`) by the type of their default: a bool, an integer >= 0, a
  finite number, or a non-empty list of finite numbers (``ground_hue_deg``: two; radii: > 0);
* the ground colour: null or three numbers in 0..1; class lists: the known class names;
* paths (``capture.path``, ``capture.file``, ``files[i].path``): texts; a file of the record stays inside it;
* hashes: 64 hex digits; the scan's ppi: the ``dpi`` record; region ids: lists of integers >= 1;
* then the rules across fields (``crack_low <= crack_high``, ...) on the whole config, named
  ``processing.config``.

Missing config fields take their defaults (records made by earlier versions); unknown ones are refused.
Fields the replay does not read (stats, palette, the object and application sections) are not checked.
"""
from __future__ import annotations

import math
import pathlib
import re
from dataclasses import MISSING, dataclass, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from .detect import DetectConfig
from .pipeline import PipelineConfig, config_from_dict
from .regions import RegionConfig
from .review import ReviewConfig
from .settings import SETTINGS, SettingError, check_tile
from .stages import check_fill_classes

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
LIST_LENGTHS = {"ground_hue_deg": 2}   # a range: exactly two numbers


class ManifestError(ValueError):
    """A manifest field refused: ``field`` is its path in the manifest (``processing.config.tile``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"manifest field '{field}': {message}")
        self.field = field


def refuse(field: str, value: Any, why: str) -> ManifestError:
    """The error for ``value`` at ``field`` (the value shown as JSON-like text, at most 60 characters)."""
    shown = "null" if value is None else repr(value)
    return ManifestError(field, f"{shown[:60]}{'...' if len(shown) > 60 else ''} {why}")


@dataclass(frozen=True)
class ReplaySpec:
    """What a replay takes from a checked manifest."""
    config: PipelineConfig
    scan: Optional[str]                 # capture.path, else capture.file (None: the record names none)
    sha256: Optional[str]
    ppi: Optional[float]
    files: Mapping[str, dict]           # role -> entry (path inside the record, sha256)
    accepted: Tuple[int, ...]
    rejected: Tuple[int, ...]
    user_mask: Mapping[str, bool]
    seeds: Mapping[str, int]
    generative: bool
    created_utc: Optional[str]


def _number(field: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise refuse(field, v, "is not a number" if v is not None else "is missing; a number belongs here")
    if not math.isfinite(v):
        raise refuse(field, v, "is not finite")
    return float(v)


def _text(field: str, v: Any, what: str = "a text", nullable: bool = True) -> Optional[str]:
    if v is None and nullable:
        return None
    if not isinstance(v, str) or not v.strip() or "\x00" in v:
        raise refuse(field, v, f"is not {what}")
    return v


def _hash(field: str, v: Any, nullable: bool = True) -> Optional[str]:
    if v is None and nullable:
        return None
    if not isinstance(v, str) or not _HEX64.match(v):
        raise refuse(field, v, "is not a SHA-256 (64 hex digits)")
    return v


def _object(field: str, v: Any) -> dict:
    if not isinstance(v, dict):
        raise refuse(field, v, "is not an object")
    return v


def _by_record(field: str, record: str, v: Any) -> Any:
    if v is None:
        raise ManifestError(field, f"null is missing; {SETTINGS[record].allowed()}")
    try:
        return check_tile(v) if record == "tile" else SETTINGS[record].check(v)
    except SettingError as exc:
        msg = str(exc)
        raise ManifestError(field, msg[len(exc.label) + 2:] if msg.startswith(exc.label + ": ") else msg) from None


def _ids(field: str, v: Any) -> Tuple[int, ...]:
    if not isinstance(v, list):
        raise refuse(field, v, "is not a list of region ids")
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, int) or x < 1:
            raise refuse(f"{field}[{i}]", x, "is not a region id (an integer >= 1)")
    return tuple(v)


def _colour(field: str, v: Any) -> Optional[list]:
    if v is None:
        return None
    if not isinstance(v, list) or len(v) != 3:
        raise refuse(field, v, "is not a colour; give null (auto) or [R, G, B] in 0..1")
    for i, x in enumerate(v):
        if not 0.0 <= _number(f"{field}[{i}]", x) <= 1.0:
            raise refuse(f"{field}[{i}]", x, "is out of range; a colour's channels are in 0..1")
    return v


def _class_list(field: str, v: Any) -> list:
    if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
        raise refuse(field, v, "is not a list of class names")
    try:
        check_fill_classes(v, "classes")
    except ValueError as exc:
        raise ManifestError(field, str(exc)) from None
    return v


def _by_default(field: str, name: str, default: Any, v: Any) -> Any:
    """A method constant checked by its default's type."""
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise refuse(field, v, "is not true or false")
    elif isinstance(default, int):
        if isinstance(v, bool) or not isinstance(v, int):
            raise refuse(field, v, "is not an integer" if v is not None else "is missing; an integer belongs here")
        if v < 0:
            raise refuse(field, v, "is negative; an integer >= 0 belongs here")
    elif isinstance(default, float):
        _number(field, v)
    elif isinstance(default, tuple):
        if not isinstance(v, list):
            raise refuse(field, v, "is not a list of numbers")
        if not v:
            raise refuse(field, v, "is an empty list; at least one number belongs here")
        n = LIST_LENGTHS.get(name)
        if n is not None and len(v) != n:
            raise refuse(field, v, f"has {len(v)} numbers; {n} belong here")
        for i, x in enumerate(v):
            if _number(f"{field}[{i}]", x) <= 0 and name.endswith("radii_mm"):
                raise refuse(f"{field}[{i}]", x, "is not a radius (a number > 0)")
    return v


_SECTIONS = {"detect": DetectConfig, "regions": RegionConfig, "review": ReviewConfig}


def _config_fields(cls: type, d: Any, where: str) -> None:
    _object(where, d)
    known = {f.name: f for f in fields(cls)}
    renamed = getattr(cls, "RECORDS", None)
    renamed = renamed if isinstance(renamed, dict) else {}
    for k, v in d.items():
        field = f"{where}.{k}"
        f = known.get(k)
        if f is None:
            raise ManifestError(field, f"unknown in this version; it knows {sorted(known)}")
        if cls is PipelineConfig and k in _SECTIONS:
            _config_fields(_SECTIONS[k], v, field)
        elif k == "ground_rgb":
            _colour(field, v)
        elif k == "fill_classes":
            _class_list(field, v)
        elif k in renamed or k in SETTINGS:
            _by_record(field, renamed.get(k, k), v)
        else:
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
            _by_default(field, k, default, v)


def check_config(d: Any, where: str = "processing.config") -> PipelineConfig:
    """The recorded config, every field checked (see the module's rules), then built and validated as a whole."""
    _config_fields(PipelineConfig, d, where)
    try:
        return config_from_dict(d).validate()
    except ValueError as exc:
        raise ManifestError(where, str(exc)) from None


def _files(v: Any, rdir: pathlib.Path) -> Dict[str, dict]:
    out: Dict[str, dict] = {}
    base = rdir.resolve()
    for i, f in enumerate(v):
        where = f"files[{i}]"
        _object(where, f)
        p = _text(f"{where}.path", f.get("path"), "a file name of the record", nullable=False)
        _text(f"{where}.role", f.get("role"), "a role (text)", nullable=False)
        _hash(f"{where}.sha256", f.get("sha256"), nullable=False)
        target = (base / str(p)).resolve()
        if pathlib.PurePath(str(p)).is_absolute() or base not in target.parents:
            raise refuse(f"{where}.path", p, "leaves the record folder; a record's files are named inside it")
        out[f["role"]] = f
    return out


def check_manifest(man: Mapping[str, Any], rdir: "str | pathlib.Path") -> ReplaySpec:
    """Every field a replay reads, checked (:class:`ManifestError` naming the first bad one); the
    :class:`ReplaySpec`. ``man`` has passed :func:`restoration.record.load_manifest` (the sections exist)."""
    cap, proc = _object("capture", man.get("capture")), _object("processing", man.get("processing"))
    if isinstance(proc.get("config"), dict) and proc["config"].get("source") == "ComfyUI nodes":
        raise ValueError("this record was made in ComfyUI: load its workflow.json in ComfyUI to reproduce it")
    cfg = check_config(proc.get("config"))
    path = _text("capture.path", cap.get("path"), "a text (the scan's path)")
    scan = _text("capture.file", cap.get("file"), "a text (the scan's file name)") if path is None else path
    _text("capture.file", cap.get("file"), "a text (the scan's file name)")
    ppi = None if cap.get("ppi") is None else _by_record("capture.ppi", "dpi", cap.get("ppi"))
    um = _object("processing.user_mask", proc.get("user_mask", {}))
    for k, v in um.items():
        if not isinstance(v, bool):
            raise refuse(f"processing.user_mask.{k}", v, "is not true or false")
    seeds = _object("processing.seeds", proc.get("seeds", {}))
    for k, v in seeds.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise refuse(f"processing.seeds.{k}", v, "is not an integer seed")
    rv = man.get("review")
    accepted: Tuple[int, ...] = ()
    rejected: Tuple[int, ...] = ()
    if rv is not None:
        _object("review", rv)
        accepted, rejected = _ids("review.accepted", rv.get("accepted", [])), _ids("review.rejected", rv.get("rejected", []))
    gen = man.get("generative", [])
    if not isinstance(gen, list):
        raise refuse("generative", gen, "is not a list")
    created = man.get("created_utc")
    if created is not None and not isinstance(created, str):
        raise refuse("created_utc", created, "is not a text (a date)")
    return ReplaySpec(config=cfg, scan=scan, sha256=_hash("capture.sha256", cap.get("sha256")), ppi=ppi,
                      files=_files(man.get("files"), pathlib.Path(rdir)), accepted=accepted, rejected=rejected,
                      user_mask=um, seeds=seeds, generative=bool(gen), created_utc=created)
