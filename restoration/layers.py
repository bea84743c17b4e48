"""Bilayer separation (colour + white), print layout with fiducials, and mirroring (spec N8, N9)."""

from __future__ import annotations

from typing import Any, Callable, Sequence, Tuple
import numpy as np

from .artefacts import PrintCanvas, PrintLayers
from .color import rgb_to_lab, srgb_to_linear
from .printfile import canvas_geometry, canvas_rows, check_layout
from .scale import Scale
from .settings import SETTINGS, WHITE_MODES  # noqa: F401  (WHITE_MODES: the record's choices, for callers)

WHITE_AMOUNT_MAX_MM = SETTINGS["amount_mm"].max
MIN_FEATURE_MAX_MM = SETTINGS["min_feature_mm"].max


def check_separation(white_mode: str = "same_pattern", amount_mm: float = 0.0, min_feature_mm: float = 0.0) -> None:
    """The white plate settings checked by their records (:class:`~atelier_settings.SettingError` naming the
    setting; a negative amount is neither choke nor spread: the mode chooses)."""
    SETTINGS["white_mode"].check(white_mode)
    SETTINGS["amount_mm"].check(amount_mm)
    SETTINGS["min_feature_mm"].check(min_feature_mm)


def _disk(r):
    import cv2
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def separate(filled: np.ndarray, original: np.ndarray, mask: np.ndarray, dpi: "float | Scale",
             white_mode: str = "same_pattern", amount_mm: float = 0.0, white_reflectance: float = 0.85,
             min_feature_mm: float = 0.0, white_on_black: bool = False, density_gamma: float = 1.0) -> PrintLayers:
    """Split the fill into print layers.

    Args:
        filled, original: (H, W, 3) float32 sRGB; mask: (H, W) bool footprint of the fill.
        white_mode: one of WHITE_MODES; ``amount_mm`` is the choke/spread distance.
        density_gamma: density curve applied to ``minimal_white`` coverage (a ** gamma).
    Returns :class:`PrintLayers`: ``color_rgba`` (H, W, 4) float32 (A = footprint, RGB = fill inside,
    0 outside) and ``white`` (H, W) float32 coverage 0..1, plus the parameters.
    """
    import cv2
    import torch
    check_separation(white_mode, amount_mm, min_feature_mm)
    scale = Scale.of(dpi)
    if mask.shape != filled.shape[:2] or original.shape != filled.shape:
        raise ValueError(f"layer inputs differ in size: filled {filled.shape}, original {original.shape}, "
                         f"mask {mask.shape}")
    m = np.asarray(mask, bool)
    if min_feature_mm > 0:
        r = max(1, scale.whole_px(min_feature_mm) // 2)
        m = cv2.morphologyEx(m.view(np.uint8), cv2.MORPH_OPEN, _disk(r)) > 0
    rgba = np.zeros(filled.shape[:2] + (4,), np.float32)
    rgba[m, :3] = filled[m]
    rgba[m, 3] = 1.0
    if white_mode == "same_pattern":
        white = m.astype(np.float32)
    elif white_mode in ("choke", "spread"):
        r = scale.whole_px(amount_mm)
        op = cv2.erode if white_mode == "choke" else cv2.dilate
        white = (op(m.view(np.uint8), _disk(r)) > 0).astype(np.float32) if r > 0 else m.astype(np.float32)
        if white_mode == "spread":
            white = np.minimum(white, 1)
    elif white_mode == "none":
        white = np.zeros(m.shape, np.float32)
    else:
        t = srgb_to_linear(torch.from_numpy(filled[m])).numpy()
        p = srgb_to_linear(torch.from_numpy(original[m])).numpy()
        denom = white_reflectance - p
        a = np.where(denom > 1e-6, (t - p) / np.maximum(denom, 1e-6), np.where(t > p, 1.0, 0.0))
        a = np.clip(a.max(1), 0, 1) ** density_gamma
        white = np.zeros(m.shape, np.float32)
        white[m] = a
    if not white_on_black:
        lab_l = rgb_to_lab(torch.from_numpy(filled[m])).numpy()[:, 0]
        wm = white[m]
        wm[lab_l < 15] = 0
        white[m] = wm
    return PrintLayers(rgba, white, white_mode, float(amount_mm), float(min_feature_mm), bool(white_on_black),
                       float(white_reflectance))


def simulate(original: np.ndarray, layers: Any, shift_px: Sequence[float] = (0, 0),
             white_shift_px: Sequence[float] = (0, 0), white_reflectance: float = 0.85) -> np.ndarray:
    """Idealised appearance of the film on the painting (linear RGB): where ink is present,
    view = T^2 (a R_w + (1 - a) R_p) with T chosen so that a perfectly registered film shows the
    target over full white. ``shift_px`` moves both films (dy, dx); ``white_shift_px`` moves white
    relative to colour. Returns (H, W, 3) sRGB float32.
    """
    import torch
    from .color import linear_to_srgb
    rgba, white = layers.color_rgba, layers.white
    sh = lambda a, s: np.roll(a, s, axis=(0, 1))
    rgba = sh(rgba, shift_px)
    white = sh(white, tuple(a + b for a, b in zip(shift_px, white_shift_px)))
    rp = srgb_to_linear(torch.from_numpy(np.array(original, np.float32))).numpy()
    tgt = srgb_to_linear(torch.from_numpy(np.ascontiguousarray(rgba[..., :3]))).numpy()
    t2 = np.clip(tgt / white_reflectance, 0, 1)  # ink transmittance^2 designed over white
    under = white[..., None] * white_reflectance + (1 - white[..., None]) * rp
    view = np.where(rgba[..., 3:] > 0, t2 * under, rp)
    return linear_to_srgb(torch.from_numpy(view.astype(np.float32))).numpy()


def layout(layers: PrintLayers, dpi: "float | Scale", margin_mm: float = 10.0, arm_mm: float = 3.0,
           line_mm: float = 0.1, mirror: bool = True) -> PrintCanvas:
    """Place both layers on a canvas with margins and identical fiducials; mirror both if asked.

    Fiducials print as full ink (colour: black, A = 1; white: coverage 1). The whole canvas in
    memory (the nodes); :func:`stream_canvas` gives the same rows strip by strip (the CLI pipeline).
    ``layers``: :class:`PrintLayers`. Returns :class:`PrintCanvas` with ``color_rgba`` (CH, CW, 4)
    and ``white`` (CH, CW) filled in.
    """
    if not isinstance(layers, PrintLayers):
        raise ValueError("layers must come from Bilayer Separate (a layout cannot be laid out again)")
    check_layout(dpi, margin_mm, arm_mm, line_mm)
    rgba, white = layers.color_rgba, layers.white
    h, w = white.shape
    geom = canvas_geometry(h, w, dpi, margin_mm, arm_mm, line_mm, mirror)
    cw, ch = geom["canvas_px"]
    c_rgba, c_white = canvas_rows(geom, lambda y0, y1: (rgba[y0:y1], white[y0:y1]), 0, ch)
    return PrintCanvas(geom, lambda r0, r1: (c_rgba[r0:r1], c_white[r0:r1]), _separation(layers), c_rgba, c_white)


def _separation(lay):
    return {"white_mode": lay.white_mode, "amount_mm": lay.amount_mm, "min_feature_mm": lay.min_feature_mm}


def layer_rows_fn(filled: np.ndarray, original: np.ndarray, mask: np.ndarray, dpi: "float | Scale",
                  white_mode: str = "same_pattern", amount_mm: float = 0.0, min_feature_mm: float = 0.0,
                  **kw: Any) -> Callable[[int, int], Tuple[np.ndarray, np.ndarray]]:
    """``layer_rows(y0, y1)`` computing :func:`restoration.layers.separate` on a strip of image rows.

    The strip is read with a halo covering the reach of the morphology (opening by ``min_feature_mm``,
    choke/spread by ``amount_mm``); everything else is per pixel, so the rows equal those of the
    whole-image separation exactly.
    """
    h = filled.shape[0]
    scale = Scale.of(dpi)
    halo = 0
    if min_feature_mm > 0:
        halo += 2 * max(1, scale.whole_px(min_feature_mm) // 2)
    if white_mode in ("choke", "spread"):
        halo += scale.whole_px(amount_mm)
    halo += 2 if halo else 0

    def rows(y0, y1):
        a, b = max(0, y0 - halo), min(h, y1 + halo)
        lay = separate(filled[a:b], original[a:b], mask[a:b], dpi, white_mode, amount_mm,
                       min_feature_mm=min_feature_mm, **kw)
        return lay.color_rgba[y0 - a:y1 - a], lay.white[y0 - a:y1 - a]
    return rows


def stream_canvas(filled: np.ndarray, original: np.ndarray, mask: np.ndarray, dpi: "float | Scale",
                  margin_mm: float = 10.0, mirror: bool = True, white_mode: str = "same_pattern",
                  amount_mm: float = 0.0, min_feature_mm: float = 0.0) -> PrintCanvas:
    """:class:`PrintCanvas` whose rows are separated and laid out strip by strip while they are written
    (memory bounded by one strip; equal to ``layout(separate(...))``, see the tests)."""
    check_separation(white_mode, amount_mm, min_feature_mm)
    check_layout(dpi, margin_mm)
    h, w = mask.shape
    geom = canvas_geometry(h, w, dpi, margin_mm=margin_mm, mirror=mirror)
    lrows = layer_rows_fn(filled, original, mask, dpi, white_mode, amount_mm, min_feature_mm)
    return PrintCanvas(geom, lambda r0, r1: canvas_rows(geom, lrows, r0, r1),
                       {"white_mode": white_mode, "amount_mm": amount_mm, "min_feature_mm": min_feature_mm})


def film_margin(mask: np.ndarray, img: np.ndarray, grow_px: int = 1, touched_de: float = 3.0) -> np.ndarray:
    """The film's footprint: ``mask`` ((H, W) bool, the regions to fill) grown by at most ``grow_px`` px
    (8-connected steps) into pixels the region touched, never into intact paint.

    A pixel beside the footprint joins only when its colour differs by more than ``touched_de`` ΔE00 from
    the paint just beyond it (the mean colour of the pixels 2-3 px outside the footprint in its 7 x 7
    neighbourhood): the anti-aliased rim of a loss is a mix of the ground and the paint, intact paint is
    the paint itself. img: (H, W, 3) float32 sRGB. Returns (H, W) bool, a superset of ``mask``."""
    import cv2
    import torch
    from .color import ciede2000
    m = np.asarray(mask, bool).copy()
    if grow_px <= 0 or not m.any():
        return m
    k3 = np.ones((3, 3), np.uint8)
    lab = rgb_to_lab(torch.from_numpy(np.ascontiguousarray(img, np.float32))).numpy()
    for _ in range(int(grow_px)):
        near = cv2.dilate(m.view(np.uint8), k3) > 0
        rim = near & ~m
        if not rim.any():
            break
        beyond = (cv2.dilate(m.view(np.uint8), np.ones((7, 7), np.uint8)) > 0) & ~near
        wgt = beyond.astype(np.float32)
        cnt = cv2.boxFilter(wgt, -1, (7, 7), normalize=False)
        ref = np.stack([cv2.boxFilter(np.ascontiguousarray(lab[..., c] * wgt), -1, (7, 7), normalize=False)
                        for c in range(3)], -1) / np.maximum(cnt, 1e-6)[..., None]
        ys, xs = np.nonzero(rim & (cnt > 0))
        d = ciede2000(torch.from_numpy(lab[ys, xs].astype(np.float64)), torch.from_numpy(ref[ys, xs].astype(np.float64))).numpy()
        join = d > touched_de
        if not join.any():
            break
        m[ys[join], xs[join]] = True
    return m
