"""The physical scale of a scan as a value: :class:`Scale` (dpi; mm <-> px, mm^2 <-> px).

Every millimetre in restoration (detection radii, region sizes, the print layout, the record) is turned
into pixels and back here, so ``25.4`` is written once (:data:`MM_PER_INCH`). A user's dpi is checked once,
when the :class:`Scale` is made (the ``dpi`` record of :mod:`restoration.settings`: 50..20000); the
context (:class:`restoration.artefacts.ScanContext`) owns one and the stages use it. A subsampled view of
the scan (a preview, the coarse ground estimate) has a coarser scale (:meth:`Scale.coarser`) that may lie
below the user range.

The arithmetic is that of the code it replaced, so results are bit-identical:
``mm_to_px = mm * dpi / 25.4``, ``px_to_mm = px * (25.4 / dpi)``, ``px_area_to_mm2 = n * (25.4 / dpi) ** 2``.
"""
from __future__ import annotations

import math
from typing import Union

from .settings import SETTINGS

__all__ = ["MM_PER_INCH", "Scale", "whole_px"]

MM_PER_INCH = 25.4
Number = Union[int, float]


def whole_px(mm: Number, dpi: Number, minimum: int = 0) -> int:
    """Millimetres -> whole pixels at ``dpi`` (rounded half to even, as ``round``), at least ``minimum``."""
    return max(int(minimum), int(round(float(mm) * float(dpi) / MM_PER_INCH)))


class Scale:
    """Pixels per inch of a scan, with the conversions between millimetres and pixels.

    ``Scale(dpi)`` checks ``dpi`` by the ``dpi`` record (a :class:`~atelier_settings.SettingError`, a
    ``ValueError`` naming ``dpi``, for anything outside 50..20000 or not a finite number).
    """

    __slots__ = ("_dpi",)

    def __init__(self, dpi: Number) -> None:
        self._dpi: float = SETTINGS["dpi"].check(dpi)

    @classmethod
    def of(cls, dpi: "Number | Scale") -> "Scale":
        """``dpi`` itself when it is a :class:`Scale`, else ``Scale(dpi)`` (checked): what the stage functions
        take, so a caller may pass the context's scale or a number."""
        return dpi if isinstance(dpi, Scale) else cls(dpi)

    @classmethod
    def _unchecked(cls, dpi: float) -> "Scale":
        if not (isinstance(dpi, (int, float)) and math.isfinite(dpi) and dpi > 0):
            raise ValueError(f"dpi={dpi!r} must be a positive number")
        s = cls.__new__(cls)
        s._dpi = float(dpi)
        return s

    def coarser(self, step: Number) -> "Scale":
        """The scale of every ``step``-th pixel (dpi / step); not bound to the user range."""
        return Scale._unchecked(self._dpi / step)

    @property
    def dpi(self) -> float:
        """Pixels per inch."""
        return self._dpi

    @property
    def mm_per_px(self) -> float:
        """Millimetres per pixel (25.4 / dpi)."""
        return MM_PER_INCH / self._dpi

    def mm_to_px(self, mm: Number) -> float:
        """Millimetres -> pixels (not rounded)."""
        return float(mm) * self._dpi / MM_PER_INCH

    def whole_px(self, mm: Number, minimum: int = 0) -> int:
        """Millimetres -> whole pixels (rounded), at least ``minimum`` (radii, margins, line widths)."""
        return whole_px(mm, self._dpi, minimum)

    def px_to_mm(self, px: Number) -> float:
        """Pixels (a length or a coordinate) -> millimetres."""
        return px * self.mm_per_px

    def px_area_to_mm2(self, n_px: Number) -> float:
        """An area of ``n_px`` pixels -> mm^2."""
        return float(n_px) * self.mm_per_px ** 2

    def mm2_to_px_area(self, mm2: Number) -> float:
        """An area in mm^2 -> pixels (not rounded)."""
        return float(mm2) * (self._dpi / MM_PER_INCH) ** 2

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scale) and other._dpi == self._dpi

    def __hash__(self) -> int:
        return hash(self._dpi)

    def __repr__(self) -> str:
        return f"Scale(dpi={self._dpi:g})"
