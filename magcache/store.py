"""Curves recorded during a first full run, kept on disk and used from the next run.

For a model, resolution or step count with no shipped curve, the host records the curve during the
first uncached run (:class:`~magcache.calibrate.CalibrationRecorder`) and stores it here; later runs
with the same key find it. Pure Python (no torch, no host).

**Key** (:class:`CurveKey`): the model file's fingerprint (:func:`file_fingerprint`), the latent
resolution, the sampler's steps and the sampler's name. **Layout**::

    <root>/<family>/<fingerprint[:16]>/<resolution>_<steps>steps_<sampler>.json

with ``root`` usually ``<output>/atelier_magcache/curves``. Each file holds the recorder's fields
(``mag_ratios``, ``branches``, ``calib_steps``, ``mag_std``, ``cos_dis``) plus ``key``, ``family``,
``model_name`` and ``recorded`` (UTC ISO date); :func:`~magcache.curve.parse_curve` reads it.

**Writes are atomic and never overwrite**: the JSON is written to a temporary file in the same folder and
linked to its name with ``os.link``, which fails when the name exists; a second writer of the same key
keeps the first curve (:meth:`CurveStore.save` returns the existing path, ``created`` False).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from .curve import Curve, parse_curve

__all__ = ["CurveKey", "CurveLookup", "CurveStore", "file_fingerprint", "FORMAT"]

FORMAT = "atelier.magcache.curve"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(text: str) -> str:
    return _SAFE.sub("-", text).strip("-.") or "x"


def file_fingerprint(path: str, chunk: int = 1 << 20) -> str:
    """A fingerprint of a model file, without reading all of it: sha256 over its size, its first
    ``chunk`` bytes (a .safetensors header lists every tensor's name, shape and offset) and its last
    ``chunk`` bytes. 64 hex digits. OSError when the file cannot be read."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(chunk, size - chunk))
            h.update(f.read(chunk))
    return h.hexdigest()


@dataclass(frozen=True)
class CurveKey:
    """What a recorded curve is valid for.

    Attributes:
        fingerprint: the model file's :func:`file_fingerprint` (hex, >= 16 characters).
        resolution: the latent's spatial (and temporal) size, e.g. ``(104, 60)`` or ``(21, 60, 104)``
            (any positive ints, in the host's order).
        steps: the sampler's steps.
        sampler: the sampler's name (and scheduler, e.g. ``"euler/simple"``).
    """
    fingerprint: str
    resolution: Tuple[int, ...]
    steps: int
    sampler: str

    def __post_init__(self) -> None:
        if not isinstance(self.fingerprint, str) or not re.fullmatch(r"[0-9a-fA-F]{16,}", self.fingerprint):
            raise ValueError(f"fingerprint: {self.fingerprint!r} is not a hex fingerprint (>= 16 digits)")
        res = tuple(self.resolution)
        if not res or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in res):
            raise ValueError(f"resolution: {self.resolution!r} must be positive integers")
        object.__setattr__(self, "resolution", res)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 2:
            raise ValueError(f"steps: {self.steps!r} must be an integer >= 2 (a curve needs two steps)")
        if not isinstance(self.sampler, str) or not self.sampler.strip():
            raise ValueError(f"sampler: {self.sampler!r} must be a non-empty name")

    @property
    def resolution_text(self) -> str:
        """``"104x60"``."""
        return "x".join(str(v) for v in self.resolution)

    def describe(self) -> str:
        """``"104x60, 30 steps, euler"``."""
        return f"{self.resolution_text}, {self.steps} steps, {self.sampler}"

    def relpath(self, family: str) -> str:
        """The file's path under the store's root."""
        return os.path.join(_safe(family), self.fingerprint[:16].lower(),
                            f"{self.resolution_text}_{self.steps}steps_{_safe(self.sampler)}.json")

    def to_dict(self) -> Dict[str, Any]:
        return {"fingerprint": self.fingerprint, "resolution": list(self.resolution), "steps": self.steps,
                "sampler": self.sampler}


@dataclass(frozen=True)
class CurveLookup:
    """What :meth:`CurveStore.lookup` found.

    Attributes:
        curve: the recorded :class:`~magcache.curve.Curve`, or None.
        path: the curve's file (existing or to be written).
        reason: one sentence for the preview: ``"recorded on 2026-12-07 for <model> (104x60, 30 steps,
            euler)"``, ``"no curve: will record during this run (...)"`` or why the file is unusable.
        record: True when the host should record the curve during this run (no file yet).
    """
    curve: Optional[Curve]
    path: str
    reason: str
    record: bool


class CurveStore:
    """Recorded curves under ``root`` (see the module docstring for the layout).

    Args:
        root: the folder, usually ``<output>/atelier_magcache/curves`` (created on first save).
        now: the clock (UTC datetime), replaceable in tests.
    """

    def __init__(self, root: str, now: Optional[Callable[[], datetime]] = None) -> None:
        self.root = root
        self._now = now or (lambda: datetime.now(timezone.utc))

    def path(self, key: CurveKey, family: str) -> str:
        """Where the curve of ``key`` for ``family`` lives."""
        return os.path.join(self.root, key.relpath(family))

    def lookup(self, key: CurveKey, family: str) -> CurveLookup:
        """The recorded curve of ``key``, or why there is none (never raises for a bad file: the reason
        says what is wrong and the file is left as it is)."""
        path = self.path(key, family)
        if not os.path.exists(path):
            return CurveLookup(None, path, f"no curve: will record during this run ({key.describe()})", True)
        try:
            with open(path, "r", encoding="utf-8") as f:
                data = json.load(f)
            curve = parse_curve(data, what=path)
        except (OSError, ValueError) as exc:
            return CurveLookup(None, path, f"the recorded curve {path} is unusable ({exc}); delete it to record "
                               "again", False)
        if not isinstance(data, dict) or data.get("key") != key.to_dict():
            return CurveLookup(None, path, f"the recorded curve {path} was made for another key; delete it to "
                               "record again", False)
        day = str(data.get("recorded", "?"))[:10]
        name = data.get("model_name") or key.fingerprint[:16]
        return CurveLookup(curve, path, f"recorded on {day} for {name} ({key.describe()})", False)

    def save(self, key: CurveKey, family: str, recorded: Mapping[str, Any], model_name: str = "") -> Tuple[str, bool]:
        """Store a recorded curve: ``recorded`` is :meth:`CalibrationRecorder.to_dict` (``mag_ratios`` and
        the rest). Returns ``(path, created)``: ``created`` False when a curve for ``key`` was there
        already (it is kept, never overwritten). ValueError when ``recorded`` is not a valid curve."""
        parse_curve(dict(recorded), what="recorded curve")
        path = self.path(key, family)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        data: Dict[str, Any] = dict(recorded)
        data.update({"format": FORMAT, "key": key.to_dict(), "family": family, "model_name": model_name,
                     "recorded": self._now().isoformat()})
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{id(data):x}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            return path, True
        except FileExistsError:
            return path, False
        finally:
            os.unlink(tmp)

    def stored(self, family: Optional[str] = None) -> Sequence[str]:
        """Paths of the stored curves (of ``family``), sorted."""
        base = self.root if family is None else os.path.join(self.root, _safe(family))
        out = []
        for d, _, files in os.walk(base):
            out += [os.path.join(d, f) for f in files if f.endswith(".json") and not f.startswith(".")]
        return sorted(out)
