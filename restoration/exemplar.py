"""Exemplar fill: continue lines and texture across a loss by copying from the undamaged picture nearby.

Each 8-connected hole is cut into square pieces of at most ``piece`` px (cells of a grid laid on its
bounding box). Pieces are filled one after another, most-surrounded first (the confidence order of
Criminisi, Perez & Toyama 2004: the share of known pixels around a piece, where pixels filled earlier
count ``filled_weight``), so a hole is filled from its rim inwards and every piece is matched on as much
known picture as possible (holes of more than 64 pieces: a fixed order by distance to the rim, so the order
costs nothing). A piece is filled like this:

1. **Template**: the piece grown by ``band`` px. Its known pixels (original ones weight 1, filled ones
   ``filled_weight``) are compared, as a weighted sum of squared differences (OpenCV ``matchTemplate``
   with a mask, computed as plain correlations: see :func:`_ssd`), with every place in a window of ``search`` px
   around it whose box holds no damaged pixel (only undamaged picture is ever copied). The search runs on
   luminance, whose values (damaged pixels zeroed) and damaged-box map are computed once per scan.
2. **Candidates**: the ``k`` best places, each at least ``k_sep`` px from the others, are blended with
   weights ``exp(-(d_i - d_0) / h^2)`` (``d``: mean squared difference per known channel value). One
   clear match (a line that continues, a repeating pattern) dominates the blend; where several places fit
   equally (grain, noise) the blend tends to their common part, which is closer to the lost picture than
   any single copy.
3. **Seam**: the blend's mismatch on the template's known pixels is carried into the piece by a harmonic
   membrane, so the copy meets its rim without a step. The membrane is the exact solution of the discrete
   Laplace equation in the template's box (:func:`_membrane_exact`: one small banded Cholesky solve), not a
   few relaxation sweeps: its smooth part is then what a converged harmonic fill of the piece gives, and
   with it a 1 px template border is enough (chosen on the tune half of bench/bench_fill.py).

Pieces whose known rim is flat (mean per-channel variance under ``flat_var``: the copy could add at most that
little detail) get the membrane of the rim without a search. Pieces whose pixels all lie within ``thin`` px of
the rim (scratches) search only ``thin_search`` px around
(the lines that cross a scratch continue nearby; 0: the membrane only). Pieces whose window holds no clean
place (a hole touching a huge damaged area) get the harmonic fill. Work is local (a window around each
piece), so the time grows with the damaged area, not the scan; nothing filled is ever a source (holes are
filled in raster order of their first pixel; holes that do not read each other, :func:`hole_groups`, are filled at
the same time on ``workers`` processes or threads, with the same result bit for bit; in each thread up to 8 such
groups run side by side, their pieces' seam membranes solved together as one banded system,
:func:`_fill_lockstep`, again bit for bit). A hole none of whose pieces kept more than ``smooth_hole`` of the
copied detail (grain or noise that no place predicts; holes of at most 64 pieces) is filled again with one exact
membrane of the whole hole, the converged harmonic fill, whose smooth guess is closer there than the chain of
per-piece membranes.
Deterministic: no randomness.
Outside the mask the output is bit-identical to the input.
"""
from __future__ import annotations

from dataclasses import dataclass
import functools
import time
from typing import Any, Callable, Generator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class ExemplarConfig:
    """Parameters of :func:`exemplar_fill` (chosen on the tune half of bench/bench_fill.py)."""
    piece: int = 12            # side of a piece (px)
    band: int = 1              # template border around a piece (px)
    search: int = 76           # search radius around the template (px; 76: a 166 px window, under the size where
                               # OpenCV's block DFT grows)
    k: int = 8                 # candidates blended
    k_sep: int = 3             # min distance between candidates (px)
    h: float = 0.05            # blend temperature (on RMS difference in [0, 1] units)
    tau: float = 0.0           # temperature that grows with the best match's own difference
    gamma: float = 0.75        # shrink the copied detail by max(0, 1 - gamma * d_0 / var) (0 = keep it all)
    thin: float = 2.0          # pieces whose pixels all lie within this distance (px) of the rim (scratches) ...
    thin_search: int = 40      # ... are searched this far only (the lines crossing them continue nearby; 0: membrane only)
    flat_var: float = 1e-4     # pieces whose rim varies less than this (mean per-channel variance) get the membrane only
    seam_iters: int = 24       # Jacobi sweeps of the seam membrane (only where it is not solved exactly) ...
    seam_exact: int = 484      # ... it is solved exactly where a box has at most this many unknown pixels (484: always,
                               # up to piece 12 + 2 x band 5)
    grey: bool = True          # search on luminance only (one channel: about 3x faster), blend in colour
    filled_weight: float = 0.5 # weight of already filled pixels in a template
    min_known_share: float = 0.1  # refuse masks that leave less than this share of the picture
    smooth_hole: float = 0.8   # a hole (of at most 64 pieces) none of whose pieces kept more than this share of copied
                               # detail gets one exact membrane of the whole hole (-1: never; 0.8 chosen on the tune
                               # half over seeds 0-5, worst case first: grain loses less to harmonic than at 0.5)

    def validate(self) -> "ExemplarConfig":
        for name in ("piece", "band", "search", "k"):
            if getattr(self, name) < 1:
                raise ValueError(f"exemplar {name}={getattr(self, name)} must be at least 1")
        if (self.k_sep < 0 or self.thin_search < 0 or not self.smooth_hole <= 1 or self.h <= 0
                or not 0 < self.filled_weight <= 1 or not 0 <= self.min_known_share < 1 or self.flat_var < 0 or self.seam_iters < 0
                or self.seam_exact < 0):
            raise ValueError(f"exemplar settings out of range: {self}")
        return self


_LUM = np.array([0.299, 0.587, 0.114], np.float32)


class _Scan(NamedTuple):
    """What the grey search needs of the whole scan, computed once (what it holds never changes during a fill:
    only damaged pixels are filled, and they are zeroed here / never a source)."""
    lum: np.ndarray                # (H, W) float32 luminance, damaged pixels 0
    lum2: np.ndarray               # (H, W) float32 its square
    bad: np.ndarray                # (H, W) uint8: 1 where the side[0] x side[1] box with this top-left corner holds damage
    side: Tuple[int, int]          # the template size ``bad`` is for (a whole piece with its band)


def _scan_maps(img: np.ndarray, damaged: np.ndarray, side: int) -> _Scan:
    """:class:`_Scan` of ``img`` ((H, W, 3) float32) and ``damaged`` ((H, W) bool) for templates of ``side`` px."""
    import cv2
    lum = img @ _LUM
    lum[damaged] = 0
    bad = cv2.dilate(damaged.view(np.uint8), np.ones((side, side), np.uint8), anchor=(0, 0),
                     borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return _Scan(lum, lum * lum, bad, (side, side))


_K4 = np.array(((0.0, 0.25, 0.0), (0.25, 0.0, 0.25), (0.0, 0.25, 0.0)), np.float32)


_CROSS = np.array(((0, 1, 0), (1, 0, 1), (0, 1, 0)), np.float32)


def _membrane_exact(resid: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The converged membrane of :func:`_membrane` (what its Jacobi sweeps tend to), solved directly: the
    discrete Laplace equation on the 4-neighbour grid of the box (neighbours outside the box left out, i.e.
    the replicate border), known pixels held. The unknown pixels in raster order make a banded symmetric
    positive definite system (band: one box row), solved by banded Cholesky (LAPACK ``dpbsv`` through
    scipy: about n w^2 operations for n unknowns in a box w wide). A part of the box with no known pixel
    gets the mean of the known ones (a pull of 1e-6 towards it keeps the system definite).
    ``resid`` (h, w, C) float32, ``known`` (h, w) bool -> (h, w, C) float32, equal to ``resid`` on ``known``.
    One box is a batch of one (:func:`_membrane_batch`)."""
    return _membrane_batch([(resid, known)])[0]


def _membrane_batch(boxes: Sequence[Tuple[np.ndarray, np.ndarray]]) -> List[np.ndarray]:
    """:func:`_membrane_exact` of each ``(resid (h, w, C) float32, known (h, w) bool)`` box (any sizes, same C),
    all solved as one block-diagonal banded system: one band matrix and one LAPACK call for the batch instead of
    some 25 small numpy calls per box. The boxes are laid on one canvas (m, Hc, Wc), each followed by a zero row
    and column (Hc, Wc: the largest box + 1), so one ``filter2D`` gives every box's known-neighbour sums and a
    pixel's lower neighbour is always Wc on; the unknown pixels of all boxes, in order, are the system's rows.
    Each box's solution does not depend on the others in the batch (the blocks are not coupled; LAPACK's sums
    over the zero entries between them add nothing): the same values, bit for bit, as the box solved alone
    (tests/core/test_restoration_exemplar_search.py). Returns the (h, w, C) float32 solutions in order."""
    import cv2
    m, c = len(boxes), boxes[0][0].shape[2]
    hc = max(k.shape[0] for _, k in boxes) + 1
    wc = max(k.shape[1] for _, k in boxes) + 1
    res = np.zeros((m, hc, wc, c), np.float32)
    kn = np.zeros((m, hc, wc), bool)
    box = np.zeros((m, hc, wc), bool)             # the pixels of a box (not the padding)
    for q, (r, k) in enumerate(boxes):
        h, w = k.shape
        res[q, :h, :w] = r
        kn[q, :h, :w] = k
        box[q, :h, :w] = True
    unk = box & ~kn
    out = res.copy()
    uf = unk.ravel()
    idx = np.cumsum(uf)                           # 1 + the row of each unknown pixel (where unknown)
    n = int(idx[-1])
    if n:
        rk = res * kn[..., None]
        nb = cv2.filter2D(rk.reshape(m * hc, wc, c), -1, _CROSS, borderType=cv2.BORDER_CONSTANT).reshape(rk.shape)
        e = _EPS * (rk.reshape(m, -1, c).sum(1) / np.maximum(kn.reshape(m, -1).sum(1), 1)[:, None].astype(np.float32))
        b = np.add(nb, e[:, None, None, :], dtype=np.float64)[unk]
        bf = box.ravel()
        deg = np.zeros(bf.shape)                  # each pixel's neighbours in its box, + the pull
        deg[1:] += bf[:-1]
        deg[:-1] += bf[1:]
        deg[wc:] += bf[:-wc]
        deg[:-wc] += bf[wc:]
        deg += _EPS
        pv = np.flatnonzero(uf[:-wc] & uf[wc:])   # vertical unknown-unknown pairs (upper p, lower p + wc)
        jv = idx[pv + wc]
        dv = jv - idx[pv]
        kd = int(dv.max()) if dv.size else min(1, n - 1)  # half bandwidth (0 for a single unknown)
        ab = np.zeros((kd + 1, n), order="F")      # upper band: ab[kd + i - j, j] = a[i, j], i <= j (LAPACK's order:
        ab[kd] = deg[uf]                           # no copy on the way in)
        if kd:
            ab[kd - 1, idx[1:][uf[:-1] & uf[1:]] - 1] = -1.0   # horizontal pairs (the padding column parts rows)
        ab[kd - dv, jv - 1] = -1.0
        _, x, info = _dpbsv()(ab, b, overwrite_ab=1, overwrite_b=1)
        if info != 0:  # pragma: no cover - the system is positive definite by construction
            raise np.linalg.LinAlgError(f"seam membrane: LAPACK dpbsv info {info}")
        out[unk] = x
    return [out[q, :k.shape[0], :k.shape[1]] for q, (_, k) in enumerate(boxes)]


@functools.lru_cache(maxsize=1)
def _dpbsv() -> Any:
    """LAPACK's banded Cholesky solve (scipy), looked up once."""
    from scipy.linalg.lapack import dpbsv
    return dpbsv


_EPS = 1e-6   # the membrane's pull towards the mean of the known pixels (keeps the system definite)


def _membrane(resid: np.ndarray, known: np.ndarray, iters: int = 24, exact_max: int = 0) -> np.ndarray:
    """Smooth extension of ``resid`` ((h, w, C) float32) from ``known`` ((h, w) bool) to the rest of a small
    box: with at most ``exact_max`` unknown pixels, the exact solution of the Laplace equation
    (:func:`_membrane_exact`); otherwise normalised Gaussian convolution as a start, then ``iters`` Jacobi
    sweeps of the Laplace equation (replicate border) with the known pixels held. Returns (h, w, C) float32
    equal to ``resid`` on ``known``."""
    import cv2
    if _exact(known, exact_max):
        return _membrane_exact(resid, known)
    k = known.astype(np.float32)
    c = resid.shape[2]
    sig = 0.25 * max(resid.shape[:2]) + 1.0
    st = np.empty(resid.shape[:2] + (c + 1,), np.float32)       # numerator and denominator, one blur
    np.multiply(resid, k[..., None], out=st[..., :c])
    st[..., c] = k
    g = cv2.GaussianBlur(st, (0, 0), sig, borderType=cv2.BORDER_REPLICATE)
    x: np.ndarray = (g[..., :c] / np.maximum(g[..., c:], 1e-6)).astype(np.float32)
    kn = np.repeat(known[..., None], c, 2)
    np.copyto(x, resid, where=kn)
    for _ in range(iters):
        x = cv2.filter2D(x, -1, _K4, borderType=cv2.BORDER_REPLICATE).reshape(resid.shape)
        np.copyto(x, resid, where=kn)
    return x


def _exact(known: np.ndarray, exact_max: int) -> bool:
    """Whether :func:`_membrane` solves the box of ``known`` ((h, w) bool) exactly: at most ``exact_max`` unknown
    pixels (a box of at most that many pixels whatever it holds: no count needed)."""
    return exact_max > 0 and (known.size <= exact_max or int(known.size - np.count_nonzero(known)) <= exact_max)


#: what a fill step asks for: the exact membrane of a box (resid (h, w, C) float32, known (h, w) bool), answered
#: with :func:`_membrane_exact` of it, batched with other holes' boxes (:func:`_fill_lockstep`)
_Steps = Generator[Tuple[np.ndarray, np.ndarray], np.ndarray, Any]


def _membrane_steps(resid: np.ndarray, known: np.ndarray, iters: int, exact_max: int) -> _Steps:
    """:func:`_membrane` as a step: an exact box is asked of the caller (one step), the Jacobi one computed here."""
    if _exact(known, exact_max):
        x = yield resid, known
        return x
    return _membrane(resid, known, iters, 0)


def _best_places(d: np.ndarray, k: int, sep: int) -> list:
    """Up to ``k`` (iy, ix, d) of the smallest finite values of ``d`` ((H, W) float32, modified), each ``sep`` px
    apart: the smallest, then the smallest outside the boxes of ``sep`` px around those taken (OpenCV
    ``minMaxLoc``: the first of equal values in raster order, as ``np.argmin``)."""
    import cv2
    out = []
    for _ in range(k):
        v, _, (ix, iy), _ = cv2.minMaxLoc(d)
        if not v < np.inf:
            break
        out.append((iy, ix, v))
        d[max(0, iy - sep):iy + sep + 1, max(0, ix - sep):ix + sep + 1] = np.inf
    return out


def _box_sum(ii: np.ndarray, th: int, tw: int) -> np.ndarray:
    """Sums over every (th, tw) box from an integral image ``ii`` ((H + 1, W + 1)) -> (H - th + 1, W - tw + 1)."""
    return ii[th:, tw:] - ii[:-th, tw:] - ii[th:, :-tw] + ii[:-th, :-tw]


def _ssd(win: np.ndarray, tpl: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """Weighted mean squared difference of ``tpl`` ((th, tw, C), weights ``wt`` (th, tw)) at every place of
    ``win`` ((Hw, Ww, C)) -> (Hw - th + 1, Ww - tw + 1) float32.

    Expanded as sum(w I^2) - 2 sum(w T I) + sum(w T^2), two plain correlations per channel (OpenCV's masked
    ``TM_SQDIFF`` computes the same several times slower)."""
    import cv2
    c = win.shape[2]
    d = np.full((win.shape[0] - tpl.shape[0] + 1, win.shape[1] - tpl.shape[1] + 1), float((wt[..., None] * tpl ** 2).sum()),
                np.float32)
    for j in range(c):
        wj = np.ascontiguousarray(win[..., j])
        d += cv2.matchTemplate(wj * wj, wt, cv2.TM_CCORR)
        d -= 2 * cv2.matchTemplate(wj, np.ascontiguousarray(wt * tpl[..., j]), cv2.TM_CCORR)
    np.maximum(d, 0, out=d)
    d /= c * max(float(wt.sum()), 1e-12)
    d[~np.isfinite(d)] = np.inf
    return d


def _ssd_grey_raw(wl: np.ndarray, wl2: np.ndarray, tpl: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """The place-dependent part of :func:`_ssd_grey`, sum(w I^2) - 2 sum(w T I), which orders the places the
    same (the rest, sum(w T^2) and the division by sum(w), is one affine map, applied by the caller to the
    few places it keeps): ``wl``, ``wl2`` (Hw, Ww), ``tpl``, ``wt`` (th, tw) float32 -> (Hw - th + 1,
    Ww - tw + 1) float32."""
    return _search_raw(wl, wl2, tpl, wt)[0]


def _search_raw(wl: np.ndarray, wl2: np.ndarray, tpl: np.ndarray, wt: np.ndarray) -> Tuple[np.ndarray, float]:
    """:func:`_ssd_grey_raw` and the constant term sum(w T^2) (float64 of the float32 sum, as
    ``float((wt * tpl * tpl).sum())``), sharing the product w T."""
    import cv2
    d: np.ndarray = cv2.matchTemplate(wl2, wt, cv2.TM_CCORR)
    wtt = wt * tpl
    c0 = float((wtt * tpl).sum())
    wtt *= np.float32(-2)                            # exact (a power of two): the same sums as 2 * corr
    d += cv2.matchTemplate(wl, wtt, cv2.TM_CCORR)
    return d, c0


def _ssd_grey(wl: np.ndarray, wl2: np.ndarray, tpl: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """:func:`_ssd` for one channel with the window's square ``wl2`` given (computed once per scan):
    ``wl``, ``wl2`` (Hw, Ww), ``tpl``, ``wt`` (th, tw) float32 -> (Hw - th + 1, Ww - tw + 1) float32."""
    d = _ssd_grey_raw(wl, wl2, tpl, wt)
    d += np.float32((wt * tpl ** 2).sum())
    np.maximum(d, 0, out=d)
    d /= max(float(wt.sum()), 1e-12)
    d[~np.isfinite(d)] = np.inf
    return d


def _search_full(win: np.ndarray, ii: np.ndarray, tpl: np.ndarray, wt: np.ndarray, cfg: "ExemplarConfig") -> list:
    """The ``k`` best clean places (iy, ix, d) of ``tpl`` in ``win``, exhaustive. ``ii``: integral of the
    window's damaged map."""
    d = _ssd(win, tpl, wt)
    d[_box_sum(ii, *tpl.shape[:2]) > 0] = np.inf
    return _best_places(d, cfg.k, cfg.k_sep)


def _piece_steps(out: np.ndarray, weight: np.ndarray, damaged: np.ndarray, sub: np.ndarray,
                 box: Tuple[int, int, int, int], cfg: ExemplarConfig, smooth_only: bool = False,
                 search: Optional[int] = None, scan: Optional["_Scan"] = None) -> _Steps:
    """Fill the ``sub`` pixels ((y1 - y0, x1 - x0) bool) of ``box`` (y0, y1, x0, x1) in ``out`` in place
    and give them ``filled_weight`` in ``weight``.

    out: (H, W, 3) float32; weight: (H, W) float32 (1 original, ``filled_weight`` filled, 0 to do);
    damaged: (H, W) bool (never a source); scan: what the grey search needs of the whole scan, computed once
    (:func:`_scan_maps`; computed here per window when None: the same result). Returns the share of the copied
    detail kept (``beta``: 0 for the membrane alone), or None where no clean place was found (nothing written).
    Fill steps (:data:`_Steps`): its exact membrane is asked of the caller.
    """
    import cv2
    h, w = damaged.shape
    y0, y1, x0, x1 = box
    b, r = cfg.band, cfg.search if search is None else search
    ty0, ty1, tx0, tx1 = max(0, y0 - b), min(h, y1 + b), max(0, x0 - b), min(w, x1 + b)
    th, tw = ty1 - ty0, tx1 - tx0
    wy0, wy1, wx0, wx1 = max(0, ty0 - r), min(h, ty1 + r), max(0, tx0 - r), min(w, tx1 + r)
    wt = weight[ty0:ty1, tx0:tx1]
    known = wt > 0
    nk = cv2.countNonZero(known.view(np.uint8))
    if nk == 0:
        return None
    # what is still damaged never enters a computation (the fill does not depend on the damaged values)
    tpl = np.where(known[..., None], out[ty0:ty1, tx0:tx1], np.float32(0))
    inner = (slice(y0 - ty0, y1 - ty0), slice(x0 - tx0, x1 - tx0))
    if smooth_only:
        val = yield from _membrane_steps(tpl, known, 8, cfg.seam_exact)
        _put(out, weight, box, sub, val[inner], cfg.filled_weight)
        return 0.0
    var = 0.0
    if cfg.gamma > 0:
        # keep the copied detail in proportion to how well it predicts the rim (Wiener-like, below): a match as
        # far from the rim as the rim varies predicts nothing, and the smooth membrane of the rim is kept instead
        # (mean of the per-channel variances of the known pixels; OpenCV sums in float64)
        if nk > 1:
            sd = cv2.meanStdDev(tpl, mask=known.view(np.uint8))[1][:, 0].tolist()
            var = (sd[0] * sd[0] + sd[1] * sd[1] + sd[2] * sd[2]) / 3
        if var < cfg.flat_var:
            # a flat rim: the copy's detail would be at most its own tiny variation; the membrane alone
            val = yield from _membrane_steps(tpl, known, cfg.seam_iters, cfg.seam_exact)
            _put(out, weight, box, sub, val[inner], cfg.filled_weight)
            return 0.0
    if wy1 - wy0 <= th or wx1 - wx0 <= tw:
        return None
    win = out[wy0:wy1, wx0:wx1]
    sw = float(wt.sum())
    if cfg.grey:
        if scan is None:
            dmg = damaged[wy0:wy1, wx0:wx1]
            wl = win @ _LUM
            wl[dmg] = 0
            wl2 = wl * wl
        else:
            wl, wl2 = scan.lum[wy0:wy1, wx0:wx1], scan.lum2[wy0:wy1, wx0:wx1]
        tl = tpl @ _LUM
        d, c0 = _search_raw(wl, wl2, tl, wt)
        if scan is not None and scan.side == (th, tw):
            bad = scan.bad[wy0:wy1 - th + 1, wx0:wx1 - tw + 1]
        else:   # the damage-box map of this template size, for the window (as _scan_maps)
            bad = cv2.dilate(damaged[wy0:wy1, wx0:wx1].view(np.uint8), np.ones((th, tw), np.uint8), anchor=(0, 0),
                             borderType=cv2.BORDER_CONSTANT, borderValue=0)[:d.shape[0], :d.shape[1]]
        cv2.add(d, np.inf, dst=d, mask=bad)           # places whose box holds damage: never chosen
        # the kept places' scores made per-pixel means (as _ssd_grey), an affine map that keeps their order
        inv = 1.0 / max(sw, 1e-12)
        best = [(iy, ix, max(v + c0, 0.0) * inv) for iy, ix, v in _best_places(d, cfg.k, cfg.k_sep)]
    else:
        dmg = damaged[wy0:wy1, wx0:wx1]
        ii = cv2.integral(dmg.view(np.uint8))
        best = _search_full(np.where(dmg[..., None], np.float32(0), win), ii, tpl, wt, cfg)
    if not best:
        return None
    d0 = best[0][2]
    kb = len(best)
    cand = np.empty((kb, th, tw, 3), np.float32)                                 # (k, th, tw, 3)
    for q in range(kb):
        iy, ix = best[q][0], best[q][1]
        cand[q] = win[iy:iy + th, ix:ix + tw]
    den = cfg.h ** 2 + cfg.tau * d0
    a = np.exp(np.array([-(c[2] - d0) / den for c in best])).astype(np.float32)
    a /= a.sum()
    src = np.dot(a[None], cand.reshape(kb, -1)).reshape(th, tw, 3)             # the blend (as np.tensordot)
    beta = 1.0
    if cfg.gamma > 0:
        beta = max(0.0, 1.0 - cfg.gamma * d0 / var) if var > 0 else 0.0
    # the copy with its seam corrected, m_tpl + beta (src - m_src) (m_*: membranes of the rim, the smooth fill,
    # and of the copy's rim); the solver is linear, so this is beta src + membrane(tpl - beta src): one
    # 3-channel pass
    bs = np.float32(beta) * src
    val = yield from _membrane_steps(tpl - bs, known, cfg.seam_iters, cfg.seam_exact)
    val += bs
    _put(out, weight, box, sub, val[inner], cfg.filled_weight)
    return beta


def _put(out: np.ndarray, weight: np.ndarray, box: Tuple[int, int, int, int], sub: np.ndarray, val: np.ndarray,
         filled_weight: float) -> None:
    """Write ``val`` ((y1 - y0, x1 - x0, 3) float32, clipped to [0, 1] in place) into ``out`` at the ``sub``
    pixels of ``box`` (y0, y1, x0, x1) and give them ``filled_weight`` in ``weight``."""
    y0, y1, x0, x1 = box
    np.minimum(val, 1, out=val)
    np.maximum(val, 0, out=val)
    np.copyto(out[y0:y1, x0:x1], val, where=sub[..., None])
    weight[y0:y1, x0:x1][sub] = filled_weight


def exemplar_fill(img: np.ndarray, mask: np.ndarray, cfg: ExemplarConfig = ExemplarConfig(),
                  progress: Optional[Callable[[int, int], None]] = None, workers: int = 1
                  ) -> Tuple[np.ndarray, np.ndarray]:
    """Fill ``mask`` in ``img`` by blended exemplar copies (see the module docstring).

    Args:
        img: (H, W, 3) float32 sRGB in [0, 1]; mask: (H, W) bool, True = fill.
        progress: called ``progress(done, total)`` with the number of holes filled (in the caller's thread; an
            exception it raises, e.g. the host's interrupt, stops the fill and is raised here).
        workers: threads that fill independent groups of holes at once (:func:`hole_groups`; 1: one after
            another in this thread). The result does not depend on it, bit for bit.
    Returns ``(out (H, W, 3) float32, rest (H, W) bool)``: ``out`` equals ``img`` bit for bit outside
    ``mask``; ``rest`` is the part of the mask no clean place was found for (left as in ``img``; the
    caller fills it another way).
    Raises ValueError when less than ``cfg.min_known_share`` of the picture is undamaged (nothing to copy
    from: use the harmonic or an external fill).
    """
    with _one_blas_thread():
        return _exemplar_fill(img, mask, cfg, progress, max(1, int(workers)))


def _one_blas_thread() -> Any:
    """A context that holds the BLAS/LAPACK pools at one thread (threadpoolctl, a requirement of the pack): the
    seam solves are tiny banded systems, which a thread pool only slows (several times on a loaded machine).
    Each worker thread of the fill then runs its own solves on one thread."""
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    return threadpool_limits(limits=1, user_api="blas")


class _Job(NamedTuple):
    """One fill's shared state: ``out`` (H, W, 3) float32, ``weight`` (H, W) float32, ``rest`` (H, W) bool are
    written (each hole only at its own pixels); ``mask`` (H, W) bool, ``lab`` (H, W) int32 hole labels,
    ``stats`` (n, 5) int32 (OpenCV's x, y, w, h, area per label) and ``scan`` are read only."""
    out: np.ndarray
    weight: np.ndarray
    rest: np.ndarray
    mask: np.ndarray
    lab: np.ndarray
    stats: np.ndarray
    scan: Optional[_Scan]
    cfg: ExemplarConfig


def _exemplar_fill(img: np.ndarray, mask: np.ndarray, cfg: ExemplarConfig,
                   progress: Optional[Callable[[int, int], None]], workers: int) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`exemplar_fill` (same arguments and result) inside :func:`_one_blas_thread`."""
    import cv2
    cfg.validate()
    mask = np.asarray(mask, bool)
    if img.ndim != 3 or img.shape[2] != 3 or mask.shape != img.shape[:2]:
        raise ValueError(f"exemplar fill needs an (H, W, 3) image and an (H, W) mask, got {img.shape} and {mask.shape}")
    h, w = mask.shape
    nd = cv2.countNonZero(mask.view(np.uint8)) if mask.size else 0
    share = 1.0 - nd / mask.size if mask.size else 0.0    # as 1 - mask.mean()
    if nd == 0:
        return np.ascontiguousarray(img, dtype=np.float32).copy(), np.zeros((h, w), bool)
    if share < cfg.min_known_share:
        raise ValueError(f"exemplar fill: only {100 * share:.1f} % of the picture is undamaged (needs at least "
                         f"{100 * cfg.min_known_share:.0f} % to copy from); use fill method 'harmonic' or 'external'")
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    workers = workers if int(stats[1:, 4].sum()) >= PARALLEL_MIN_AREA and n > 2 else 1
    procs = workers > 1 and _can_fork()
    # what the workers write: in memory shared with the worker processes when there are any (the same values)
    out = _alloc((h, w, 3), np.float32, procs)
    np.copyto(out, img, casting="unsafe")
    weight = _alloc((h, w), np.float32, procs)
    np.logical_not(mask, out=weight, casting="unsafe")
    if procs:
        rest = _alloc((h, w), np.bool_, True)
        rest[...] = False
    else:
        rest = np.zeros((h, w), bool)    # pages zeroed lazily by the system: only holes with no clean place touch it
    scan = _scan_maps(out, mask, cfg.piece + 2 * cfg.band) if cfg.grey else None
    job = _Job(out, weight, rest, mask, lab, stats, scan, cfg)
    if workers <= 1:
        count = [0]

        def done() -> None:
            count[0] += 1
            if progress:
                progress(count[0], n - 1)
        _fill_lockstep(job, hole_groups(lab, stats, cfg.band), done)
    elif procs:
        _fill_processes(job, hole_groups(lab, stats, cfg.band), workers, progress)
    else:
        _fill_parallel(job, hole_groups(lab, stats, cfg.band), workers, progress)
    return out, rest


#: below this many damaged pixels the fill runs in the caller alone (a worker's start costs more than it saves)
PARALLEL_MIN_AREA = 20000
#: the longest the caller goes without a ``progress`` call while workers fill (the host's interrupt is heard there)
PROGRESS_EVERY_S = 1.0
#: after an interrupt or a failure, how long the caller waits for busy workers before it kills them (processes) or
#: leaves them behind (threads): the fill is discarded then
STOP_WAIT_S = 5.0


def auto_workers(n: int = 0) -> int:
    """The fill's worker count for a setting ``n`` (``fill_workers``): ``n`` itself, or for 0 the CPUs this
    process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where that is missing)."""
    import os
    if n > 0:
        return int(n)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _can_fork() -> bool:
    """Worker processes are started by fork (they share the scan's maps without a copy): Linux only, and not
    inside a daemonic worker of a multiprocessing pool (which may have no children); elsewhere the workers are
    threads (Python's lock, which the per-piece glue holds, limits what they gain)."""
    import multiprocessing
    import os
    import sys
    return sys.platform.startswith("linux") and hasattr(os, "fork") and not multiprocessing.current_process().daemon


def _alloc(shape: Tuple[int, ...], dtype: Any, shared: bool) -> np.ndarray:
    """An uninitialised array, in anonymous memory shared with processes forked later when ``shared``."""
    if not shared:
        return np.empty(shape, dtype)
    import mmap
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    buf = mmap.mmap(-1, max(nbytes, 1))          # MAP_SHARED | MAP_ANONYMOUS: the children write into it
    return np.frombuffer(buf, dtype, int(np.prod(shape))).reshape(shape)


def _hole_steps(job: _Job, i: int) -> _Steps:
    """Fill hole ``i`` (label of ``job.lab``) in ``job.out``, piece by piece (see the module docstring).
    Reads ``out`` and ``weight`` of other holes only inside the hole's bounding box grown by ``cfg.band`` (the
    templates and the confidence order); writes only the hole's own pixels of ``out``, ``weight`` and ``rest``.
    Fill steps (:data:`_Steps`): the pieces' exact membranes are asked of the caller."""
    import cv2
    out, weight, rest, mask, lab, stats, scan, cfg = job
    h, w = mask.shape
    p, b = cfg.piece, cfg.band
    x0, y0, bw, bh = (int(v) for v in stats[i, :4])
    # distance of each hole pixel to the rim, in the box grown by 1 px
    gy0, gx0 = max(0, y0 - 1), max(0, x0 - 1)
    dist = cv2.distanceTransform((lab[gy0:y0 + bh + 1, gx0:x0 + bw + 1] == i).view(np.uint8), cv2.DIST_L2, 3)
    # pieces: grid cells over the bounding box that hold pixels of this hole
    cells = [(cy, min(cy + p, y0 + bh), cx, min(cx + p, x0 + bw))
             for cy in range(y0, y0 + bh, p) for cx in range(x0, x0 + bw, p)]
    subs = [lab[c[0]:c[1], c[2]:c[3]] == i for c in cells]    # each cell's pixels of this hole
    keep = [q for q, sb in enumerate(subs) if sb.any()]
    cells, subs = [cells[q] for q in keep], [subs[q] for q in keep]
    dynamic = len(cells) <= 64
    if not dynamic:  # a large hole: a fixed rim-first order (each piece's nearest pixel to the rim), raster ties
        order = sorted(range(len(cells)), key=lambda q: float(dist[cells[q][0] - gy0:cells[q][1] - gy0,
                                                                    cells[q][2] - gx0:cells[q][3] - gx0][subs[q]].min()))
        cells, subs = [cells[q] for q in order], [subs[q] for q in order]
    most, gone = 0.0, False   # the largest share of copied detail a piece kept; whether one found no place
    conf = [0.0] * len(cells)
    stale = [True] * len(cells)
    while cells:
        # confidence: known weight around each remaining piece (rim first, then inwards); only the pieces
        # whose grown box meets the piece filled last change
        j = 0
        if dynamic and len(cells) > 1:
            for q, c in enumerate(cells):
                if stale[q]:
                    around = weight[max(0, c[0] - b):c[1] + b, max(0, c[2] - b):c[3] + b]
                    conf[q] = float(around.sum() / np.float32(around.size))   # its mean, without np.mean's overhead
                    stale[q] = False
            j = max(range(len(conf)), key=conf.__getitem__)   # the first of the largest, as np.argmax
        c = cells.pop(j)
        sub = subs.pop(j)
        conf.pop(j)
        stale.pop(j)
        for q, e in enumerate(cells):
            if e[0] - b < c[1] and c[0] < e[1] + b and e[2] - b < c[3] and c[2] < e[3] + b:
                stale[q] = True
        thin = cfg.thin > 0 and float(dist[c[0] - gy0:c[1] - gy0, c[2] - gx0:c[3] - gx0][sub].max()) <= cfg.thin
        kept = yield from _piece_steps(out, weight, mask, sub, c, cfg, smooth_only=thin and cfg.thin_search <= 0,
                                       search=cfg.thin_search if thin else None, scan=scan)
        if kept is None:
            rest[c[0]:c[1], c[2]:c[3]][sub] = True    # this hole's pixels only (other holes may share the box)
            gone = True
        else:
            most = max(most, kept)
    if dynamic and not gone and most <= cfg.smooth_hole:
        # no piece kept enough copied detail: the hole is grain or noise no place predicts, whose best guess is
        # the smooth fill; one exact membrane of the whole hole (what the harmonic fill converges to) instead
        # of the chain of per-piece ones. Holes of at most 64 pieces only (the banded solve of a hole w px wide
        # and n px large costs n w^2 and holds n w numbers: about 0.1 s and 7 MB at the largest, 96 x 96 px).
        # Only undamaged pixels are known; the damaged ones (this hole's, other holes' filled or not yet, NaN
        # or not) enter as 0, so nothing of another hole is read.
        gy1, gx1 = min(h, y0 + bh + 1), min(w, x0 + bw + 1)
        hole = lab[gy0:gy1, gx0:gx1] == i
        box = out[gy0:gy1, gx0:gx1]
        known = ~mask[gy0:gy1, gx0:gx1]
        memb = np.clip(_membrane_exact(np.where(known[..., None], box, np.float32(0)), known), 0, 1)
        box[hole] = memb[hole]


def _fill_lockstep(job: _Job, groups: Sequence[Sequence[int]], done: Callable[[], None],
                   stop: Callable[[], bool] = lambda: False) -> None:
    """Fill ``groups`` (:func:`hole_groups`, each group's holes in label order) side by side in this thread: up to
    :data:`LOCKSTEP` groups run at once, each up to its next exact membrane, and those membranes are solved
    together (:func:`_membrane_batch`: one banded system, not some 25 numpy calls per box). Groups never read
    each other and a box's solution does not depend on its batch, so the pixels are those of the one-by-one fill
    bit for bit. ``done()`` is called after each hole (it may raise: the fill then stops); ``stop()``, checked
    after each step, ends the fill early (the caller discards it)."""
    def steps(grp: Sequence[int]) -> _Steps:
        for i in grp:
            yield from _hole_steps(job, i)
            done()

    todo = iter(groups)
    running: list = []              # (the steps of a group, the box it asks for)
    while True:
        while len(running) < LOCKSTEP:
            grp = next(todo, None)
            if grp is None:
                break
            st = steps(grp)
            box = next(st, None)
            if box is not None:
                running.append((st, box))
        if not running or stop():
            return
        sols = _membrane_batch([box for _, box in running])
        nxt = []
        for (st, _), x in zip(running, sols):
            try:
                nxt.append((st, st.send(x)))
            except StopIteration:
                pass
        running = nxt


#: the groups of holes :func:`_fill_lockstep` runs side by side (their membranes: one banded solve per step); at most
#: the groups a worker takes at a time (:func:`_chunks`). 8: a batch of 8 boxes costs about 30 us per box against 24
#: for 64 and 74 for one (bench_fill_batch.py), and fewer groups side by side keep their windows in the caches (64
#: was 2 % slower than the one-by-one fill at 100 MP; bench_fill_lockstep.py)
LOCKSTEP = 8


def hole_groups(lab: np.ndarray, stats: np.ndarray, band: int) -> list:
    """The holes of ``lab`` ((H, W) int32, labels 1..n-1; ``stats`` (n, 5) OpenCV's x, y, w, h, area) in groups
    that can be filled in any order and at the same time, each giving the same pixels as the one-by-one fill.

    What hole ``i`` reads of the other holes (:func:`_hole_steps`) lies in its reach, its bounding box grown by
    ``band`` px (the templates of its pieces and their confidence order); its search and its copies read only
    undamaged pixels, and it writes only its own pixels. So two holes depend on each other only when one has a
    pixel in the other's reach; such pairs are joined (transitively) into one group, filled in label order
    (the one-by-one order), and different groups never read each other. Returns a list of groups, each a list
    of labels in ascending order, in order of their first label (raster order: groups next in the list lie near
    each other on the scan, so groups filled side by side share the scan's rows in the caches; ordered by area,
    largest first, they were spread over the scan and the fill was 3 % slower at 100 MP)."""
    n = len(stats) - 1
    if n <= 0:
        return []
    h, w = lab.shape
    x, y, bw, bh = (stats[1:, k].astype(np.int64) for k in range(4))
    ry0, ry1 = np.maximum(y - band, 0), np.minimum(y + bh + band, h)
    rx0, rx1 = np.maximum(x - band, 0), np.minimum(x + bw + band, w)
    # candidate pairs: a reach that meets another hole's box; found through a grid of g px cells that each
    # reach covers (a pair meets in at least one cell both cover, since a box lies inside its reach)
    g = 64
    cy0, cy1, cx0, cx1 = ry0 // g, (ry1 - 1) // g, rx0 // g, (rx1 - 1) // g
    ny, nx = cy1 - cy0 + 1, cx1 - cx0 + 1
    cnt = ny * nx
    hole = np.repeat(np.arange(n), cnt)
    k = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt)   # index of the cell within each reach
    cell = (np.repeat(cy0, cnt) + k // np.repeat(nx, cnt)) * (w // g + 1) + np.repeat(cx0, cnt) + k % np.repeat(nx, cnt)
    order = np.lexsort((hole, cell))
    cell, hole = cell[order], hole[order]
    starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
    ends = np.r_[starts[1:], len(cell)]
    parent = list(range(n))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    seen = set()
    for s, e in zip(starts[ends - starts > 1].tolist(), ends[ends - starts > 1].tolist()):
        hs = hole[s:e].tolist()
        for u in range(len(hs)):
            a = hs[u]
            for bb in hs[u + 1:]:
                if (a, bb) in seen:
                    continue
                seen.add((a, bb))
                if _reads(lab, a, bb, ry0, ry1, rx0, rx1, x, y, bw, bh) or _reads(lab, bb, a, ry0, ry1, rx0, rx1, x, y, bw, bh):
                    ra, rb = root(a), root(bb)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
    groups: dict = {}
    for a in range(n):
        groups.setdefault(root(a), []).append(a + 1)
    return list(groups.values())   # in order of their first hole (a group's root is its smallest label)


def _reads(lab: np.ndarray, a: int, b: int, ry0: np.ndarray, ry1: np.ndarray, rx0: np.ndarray, rx1: np.ndarray,
           x: np.ndarray, y: np.ndarray, bw: np.ndarray, bh: np.ndarray) -> bool:
    """Whether hole ``b + 1`` has a pixel in the reach of hole ``a + 1`` (0-based indices into the arrays of
    :func:`hole_groups`): only where the reach meets ``b``'s box."""
    y0, y1 = max(int(ry0[a]), int(y[b])), min(int(ry1[a]), int(y[b] + bh[b]))
    x0, x1 = max(int(rx0[a]), int(x[b])), min(int(rx1[a]), int(x[b] + bw[b]))
    return y0 < y1 and x0 < x1 and bool((lab[y0:y1, x0:x1] == b + 1).any())


def _fill_parallel(job: _Job, groups: list, workers: int,
                   progress: Optional[Callable[[int, int], None]]) -> None:
    """Fill ``groups`` (:func:`hole_groups`) on ``workers`` threads, each taking a run of groups at a time
    (:func:`_chunks`) and filling it as :func:`_fill_lockstep`: the same pixels as the one-by-one fill, bit for bit (groups
    never read each other; within a group, label order). The per-piece work is mostly OpenCV and LAPACK calls,
    which release Python's lock. ``progress(done, total)`` is called here, in the calling thread, as holes are
    done; when it (or a worker) raises, the workers stop after their current step and the exception is raised
    here."""
    import queue
    import threading
    total = sum(len(g) for g in groups)
    todo = iter(_chunks(groups, workers))
    lock, stop = threading.Lock(), threading.Event()
    news: "queue.SimpleQueue[Any]" = queue.SimpleQueue()

    def work() -> None:
        try:
            while not stop.is_set():
                with lock:
                    chunk = next(todo, None)
                if chunk is None:
                    break
                _fill_lockstep(job, chunk, lambda: news.put(1), stop.is_set)
        except BaseException as exc:  # handed to the calling thread, which raises it
            news.put(exc)
        finally:
            news.put(None)

    threads = [threading.Thread(target=work, name=f"exemplar-fill-{k}", daemon=True)
               for k in range(min(workers, len(groups)))]
    for t in threads:
        t.start()
    done, running, ended = 0, len(threads), False
    try:
        while running:
            try:
                msg = news.get(timeout=PROGRESS_EVERY_S)
            except queue.Empty:   # no hole done for a while: the caller still hears (and may interrupt)
                if progress:
                    progress(done, total)
                continue
            if msg is None:
                running -= 1
            elif isinstance(msg, BaseException):
                raise msg
            else:
                done += msg
                if progress:
                    progress(done, total)
        ended = True
    finally:
        stop.set()
        deadline = time.monotonic() + STOP_WAIT_S
        for t in threads:   # after an exception: a thread still busy is left behind (a daemon; not killable)
            t.join(None if ended else max(0.0, deadline - time.monotonic()))


def _chunks(groups: list, workers: int) -> list:
    """``groups`` in runs that a worker takes at a time, in order: :data:`LOCKSTEP` groups, fewer where there are
    not four runs per worker (so that every worker has some)."""
    k = max(1, min(LOCKSTEP, len(groups) // (4 * workers)))
    return [groups[j:j + k] for j in range(0, len(groups), k)]


def _fill_processes(job: _Job, groups: list, workers: int,
                    progress: Optional[Callable[[int, int], None]]) -> None:
    """:func:`_fill_parallel` on ``workers`` forked processes (Python's lock does not hold them back): they
    inherit the read-only maps (no copy) and write ``job.out``, ``job.weight`` and ``job.rest``, which are in
    shared memory (:func:`_alloc`), each hole only at its own pixels, so the result is the one-by-one fill's bit
    for bit. The groups are handed out in runs (:func:`_chunks`; the next run's index under a lock), each run
    filled as :func:`_fill_lockstep`; ``progress(done, total)`` is called here about ten times a second; when it
    raises (the host's interrupt) or a worker fails, the workers stop after their current step, are waited for,
    and the exception is raised here."""
    import multiprocessing as mp
    from multiprocessing.connection import wait
    ctx = mp.get_context("fork")
    total = sum(len(g) for g in groups)
    chunks = _chunks(groups, workers)
    workers = min(workers, len(chunks))
    counters = _alloc((workers + 2,), np.int64, True)   # [next run of groups, stop flag, holes done by each worker]
    counters[:] = 0
    lock = ctx.Lock()
    pipes = [ctx.Pipe(duplex=False) for _ in range(workers)]
    procs = [ctx.Process(target=_worker, args=(job, chunks, counters, lock, k, pipes[k][1]),
                         name=f"exemplar-fill-{k}", daemon=True) for k in range(workers)]
    import cv2
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)     # OpenCV's thread pool stopped while forking: a child that inherits a pool whose threads
    try:                     # it lacks hangs in its first parallel call (seen); back to what it was right after
        for pr in procs:
            pr.start()
    finally:
        cv2.setNumThreads(cv_threads)
    for _, snd in pipes:
        snd.close()
    shown, last = -1, 0.0
    try:
        alive = list(procs)
        while alive:
            wait([pr.sentinel for pr in alive], timeout=0.1)
            for pr in [pr for pr in alive if not pr.is_alive()]:
                pr.join()
                alive.remove(pr)
                if pr.exitcode != 0:
                    rcv = pipes[procs.index(pr)][0]
                    why = rcv.recv() if rcv.poll() else f"exit code {pr.exitcode}"
                    raise RuntimeError(f"exemplar fill: worker {pr.name} failed: {why}")
            done, now = int(counters[2:].sum()), time.monotonic()
            if progress and (done != shown or now - last >= PROGRESS_EVERY_S):   # heard at least once a second
                shown, last = done, now
                progress(done, total)
    finally:
        counters[1] = 1   # here every worker has ended, or an exception discards the fill: a worker still busy
        deadline = time.monotonic() + STOP_WAIT_S   # then (a large hole, or one wedged) is killed
        for pr in procs:
            pr.join(max(0.0, deadline - time.monotonic()))
            if pr.is_alive():
                pr.kill()
                pr.join()
        for rcv, _ in pipes:
            rcv.close()


def _count(counters: np.ndarray, i: int) -> None:
    """One more hole done by a worker (``counters[i]``, in memory shared with the caller)."""
    counters[i] += 1


def _worker(job: _Job, chunks: list, counters: np.ndarray, lock: Any, k: int, errors: Any) -> None:
    """A worker process of :func:`_fill_processes`: takes the next run of groups (:func:`_chunks`) until none is
    left or the stop flag is set; a failure is sent on ``errors`` as text and ends the process with exit code 1."""
    import os
    import signal
    import traceback
    try:
        # one thread per worker: OpenCV's pool was at one thread when forked, BLAS is held at one by the parent's
        # limit; Ctrl-C is the parent's to handle (it stops the workers)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        while not counters[1]:
            with lock:
                g = int(counters[0])
                counters[0] = g + 1
            if g >= len(chunks):
                break
            _fill_lockstep(job, chunks[g], lambda: _count(counters, 2 + k), lambda: bool(counters[1]))
    except BaseException:
        errors.send(traceback.format_exc(limit=8))
        errors.close()
        os._exit(1)
