"""Loss evidence: the per-component signature of missing paint, the ground colour estimated only from
loss candidates, and each loss's confidence (used by :func:`restoration.detect.detect_damage`; the
rules are described in that module's docstring). Also the small Lab / tiling helpers both share.

Every function takes the detector's config (:class:`restoration.detect.DetectConfig`) as ``cfg``.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple
import numpy as np
import torch

from .color import ciede2000, rgb_to_lab
from .scale import Scale
from .tiles import tile_boxes

RESP_SCALE = 4.0  # response maps are stored as uint8 in units of 0.25 L* / 0.25 dE00


def _disk(r):
    import cv2
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def denoise(img: np.ndarray, k: int = 5) -> np.ndarray:
    """(H, W, 3) float32 sRGB -> the same, median-filtered per channel over ``k`` x ``k`` (k = 3 or 5).

    The loss path (ground colour, seeds, flatness, edges) reads this: an exposed gesso has per-pixel
    noise (0.03 in sRGB is about 3 L*) that breaks a colour seed into holes and a flat area into specks,
    while a median keeps the edges of a loss. Cracks and light defects still read the scan itself."""
    import cv2
    a = np.ascontiguousarray(img, dtype=np.float32)
    return cv2.medianBlur(a, k) if a.shape[0] >= k and a.shape[1] >= k else a.copy()


def lab_of(img_np: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 sRGB numpy -> (H, W, 3) float32 Lab numpy."""
    a = np.ascontiguousarray(img_np, dtype=np.float32)
    if not a.flags.writeable:
        a = a.copy()
    return rgb_to_lab(torch.from_numpy(a)).numpy()


def lab_grad(lab: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 Lab -> (H, W) float32 colour gradient magnitude in Lab units per px (Sobel / 8)."""
    import cv2
    g = np.zeros(lab.shape[:2], np.float32)
    for c in range(3):
        ch = np.ascontiguousarray(lab[..., c])
        gx = cv2.Sobel(ch, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
        gy = cv2.Sobel(ch, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
        g += gx * gx + gy * gy
    return np.sqrt(g)


def component_features(img: np.ndarray, labels: np.ndarray, grad_max: np.ndarray, cfg: Any, tile: int = 2048,
                       core: Optional[np.ndarray] = None, exclude: Optional[np.ndarray] = None,
                       raw: Optional[np.ndarray] = None, interior: Optional[np.ndarray] = None) -> dict:
    """Per component of ``labels`` (int32 (H, W), 0 = none, N = max) the evidence that it is a loss.

    grad_max: (H, W) colour gradient (Lab units / px), already max-filtered over 3 x 3 (any dtype; in
    units of 1/RESP_SCALE when uint8); core: optional (H, W) bool, the pixels whose colour describes
    the component (its seeds; the anti-aliased rim is left out of ``lab`` and ``std_L``); exclude:
    optional (H, W) bool, pixels left out of the ring (thin dark lines: a paint island between cracks
    has the same paint beyond its cracks, so it is no loss). Returns a dict of (N + 1,) float64 arrays: ``n`` (px),
    ``lab`` (N + 1, 3) mean inside, ``std_L``, ``ring_lab``, ``n_ring`` (``cfg.loss_ring_px`` ring),
    ``contrast`` (dE00 inside vs ring), ``ring_differs`` (share of the ring whose colour lies more
    than ``loss_contrast_de`` from the inside mean), ``edge_frac`` (share of the 1 px ring where a gradient of at
    least ``loss_edge_rel`` x contrast lies within 1 px: an edge all round), ``border_frac`` (share of
    the outline on the image border), ``chroma`` (C* inside), and with ``raw`` (the scan itself when ``img``
    is :func:`denoise`'d) ``noise_L`` (std of raw L* minus ``img``'s L* inside, over the ``interior`` pixels
    when given, i.e. away from the outline where the median meets the edge: the per-pixel texture; NaN
    for a component without such pixels).
    Computed tile by tile (exact).
    """
    n = int(labels.max())
    s_in, s_l2, c_in, s_ring, c_ring = label_lab_sums(img, labels, cfg.loss_ring_px, tile, core, exclude)
    if core is not None:
        c_core = c_in
        c_in = np.bincount(labels.ravel(), minlength=n + 1).astype(np.float64)
    else:
        c_core = c_in
    inside = s_in / np.maximum(c_core, 1)[:, None]
    ringm = s_ring / np.maximum(c_ring, 1)[:, None]
    std_l = np.sqrt(np.maximum(s_l2 / np.maximum(c_core, 1) - inside[:, 0] ** 2, 0))
    contrast = ciede2000(torch.from_numpy(inside), torch.from_numpy(ringm)).numpy()
    contrast[c_ring == 0] = 0
    # the contrast point by point: the share of the ring (cracks left out) whose colour lies more than
    # loss_contrast_de from the inside mean. Around a loss that crosses light and dark paint the ring's
    # mean colour can equal the ground's while every ring pixel differs from it
    differ, ring_de = np.zeros(n + 1), np.zeros(n + 1)
    for (y0, y1, x0, x1), L, dil, ring in _ring_tiles(labels, cfg.loss_ring_px, tile):
        if exclude is not None:
            ring = ring & ~exclude[y0:y1, x0:x1].ravel()
        if not ring.any():
            continue
        R = dil[ring]
        labr = lab_of(img[y0:y1, x0:x1].reshape(-1, 3)[ring][None])[0].astype(np.float64)
        d = ciede2000(torch.from_numpy(labr), torch.from_numpy(inside[R])).numpy()
        differ += np.bincount(R, (d > cfg.loss_contrast_de).astype(np.float64), minlength=n + 1)
        ring_de += np.bincount(R, d, minlength=n + 1)
    ring_differs = differ / np.maximum(c_ring, 1)
    ring_de = ring_de / np.maximum(c_ring, 1)
    noise = np.zeros(n + 1)
    if raw is not None:
        s_r2, c_tex = np.zeros(n + 1), np.zeros(n + 1)
        for (y0, y1, x0, x1), L, dil, ring in _ring_tiles(labels, 1, tile):
            sel = L > 0
            if core is not None:
                sel &= core[y0:y1, x0:x1].ravel()
            if interior is not None:
                sel &= interior[y0:y1, x0:x1].ravel()
            if not sel.any():
                continue
            c_tex += np.bincount(L[sel], minlength=n + 1)
            lr = lab_of(raw[y0:y1, x0:x1].reshape(-1, 3)[sel][None])[0][:, 0].astype(np.float64)
            ld = lab_of(img[y0:y1, x0:x1].reshape(-1, 3)[sel][None])[0][:, 0].astype(np.float64)
            s_r2 += np.bincount(L[sel], (lr - ld) ** 2, minlength=n + 1)
        noise = np.where(c_tex > 0, np.sqrt(s_r2 / np.maximum(c_tex, 1)), np.nan)
    scale = RESP_SCALE if grad_max.dtype == np.uint8 else 1.0
    hit, tot = _edge_counts(labels, grad_max, cfg.loss_edge_rel * contrast * scale, tile)
    # the edge where one can be seen: the outline pixels whose colour differs from the inside by more than half of
    # loss_contrast_de (an outside pixel keeps at least half of the paint's colour, so the paint there differs by
    # about loss_contrast_de or more); where the paint beside a loss has its colour no edge shows, and none is missing
    # (measured only where it can change the confidence: a ring that differs nearly all round, an edge short of all
    # round; elsewhere it equals edge_frac)
    hit_s, tot_s = np.zeros(n + 1), np.zeros(n + 1)
    thr_e = cfg.loss_edge_rel * contrast * scale
    need = (ring_differs >= getattr(cfg, "ring_seen_share", 0.0)) & (hit < tot)
    need[0] = False
    for (y0, y1, x0, x1), L, dil, ring in _ring_tiles(labels, 1, tile) if need.any() else ():
        ring = ring & need[dil]
        if not ring.any():
            continue
        R = dil[ring]
        labr = lab_of(img[y0:y1, x0:x1].reshape(-1, 3)[ring][None])[0].astype(np.float64)
        d = ciede2000(torch.from_numpy(labr), torch.from_numpy(inside[R])).numpy()
        vis = d > 0.5 * cfg.loss_contrast_de
        g = grad_max[y0:y1, x0:x1].ravel()[ring]
        tot_s += np.bincount(R[vis], minlength=n + 1)
        # (the step expected there is the paint's own difference, about twice the outline pixel's; never more than
        # the mean contrast asks)
        t_loc = np.minimum(thr_e[R], cfg.loss_edge_rel * 2 * d * scale)
        hit_s += np.bincount(R[vis], (g[vis] >= t_loc[vis]).astype(np.float64), minlength=n + 1)
    h, w = labels.shape
    edge_px = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]]) if h > 1 and w > 1 \
        else labels.ravel()
    b = np.bincount(edge_px, minlength=n + 1).astype(np.float64)
    return {"n": c_in, "lab": inside, "std_L": std_l, "ring_lab": ringm, "n_ring": c_ring, "contrast": contrast,
            "ring_differs": ring_differs, "ring_de": ring_de, "edge_frac": hit / np.maximum(tot, 1),
            "edge_seen": np.where(tot_s > 0, hit_s / np.maximum(tot_s, 1), hit / np.maximum(tot, 1)), "border_frac": b / np.maximum(b + tot, 1),
            "chroma": np.hypot(inside[:, 1], inside[:, 2]), "noise_L": noise}


def label_lab_sums(img: np.ndarray, labels: np.ndarray, ring_px: int, tile: int = 2048,
                   core: Optional[np.ndarray] = None, exclude: Optional[np.ndarray] = None
                   ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per label of ``labels`` (int32 (H, W), 0 = none, N = max) the CIELAB sums of ``img`` (H, W, 3) inside
    it and in its ``ring_px`` ring (:func:`_ring_tiles`: unlabelled pixels within ``ring_px``; where rings
    meet the higher id wins). ``core``/``exclude``: optional (H, W) bool, the only inside pixels counted /
    pixels left out of the rings. Returns float64 ``(s_in (N+1, 3), s_L2 (N+1,) (sum of L*^2 inside),
    n_in (N+1,), s_ring (N+1, 3), n_ring (N+1,))``; computed tile by tile (exact)."""
    n = int(labels.max())
    s_in = np.zeros((n + 1, 3)); s_ring = np.zeros((n + 1, 3)); s_l2 = np.zeros(n + 1)
    c_in = np.zeros(n + 1); c_ring = np.zeros(n + 1)
    for (y0, y1, x0, x1), L, dil, ring in _ring_tiles(labels, ring_px, tile):
        sel = L > 0
        if core is not None:
            sel &= core[y0:y1, x0:x1].ravel()
        if exclude is not None:
            ring = ring & ~exclude[y0:y1, x0:x1].ravel()
        if not (sel.any() or ring.any()):
            continue
        # CIELAB of the pixels that count only (components and rings are a small part of a scan; elementwise: exact)
        rgb = img[y0:y1, x0:x1].reshape(-1, 3)
        Ls, labs = L[sel], lab_of(rgb[sel][None])[0].astype(np.float64)
        for ch in range(3):
            s_in[:, ch] += np.bincount(Ls, labs[:, ch], minlength=n + 1)
        s_l2 += np.bincount(Ls, labs[:, 0] ** 2, minlength=n + 1)
        c_in += np.bincount(Ls, minlength=n + 1)
        R, labr = dil[ring], lab_of(rgb[ring][None])[0].astype(np.float64)
        for ch in range(3):
            s_ring[:, ch] += np.bincount(R, labr[:, ch], minlength=n + 1)
        c_ring += np.bincount(R, minlength=n + 1)
    return s_in, s_l2, c_in, s_ring, c_ring


def loss_signature(f: dict, total_px: int, cfg: Any) -> np.ndarray:
    """Boolean (N + 1,) per component: has the signature of missing paint (a contrast to its own
    surroundings: its mean colour differs from the ring's mean by more than ``loss_contrast_de``, or
    at least ``loss_ring_differs`` of the ring differs from it by that much point by point; an edge all round, a flat interior, not a background that fills the picture or runs
    along its border). ``f`` from :func:`component_features`; index 0 is False."""
    differs = (f["contrast"] > cfg.loss_contrast_de) | (f["ring_differs"] >= cfg.loss_ring_differs)
    ok = (f["n_ring"] > 0) & differs & (f["edge_frac"] >= cfg.loss_edge_frac)
    ok &= (f["std_L"] <= cfg.loss_flat_std) & (f["n"] <= cfg.loss_max_share * total_px)
    ok &= f["border_frac"] <= cfg.loss_border_frac
    ok[0] = False
    return ok


def ground_candidates(img: np.ndarray, dpi: "float | Scale", cfg: Any, max_px: int = 2_000_000,
                      prior: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loss candidates found without any ground colour, on the scan subsampled to ``max_px`` at most.

    A candidate is a connected flat (colour gradient < ``flat_grad``), low-chroma (C* <=
    ``loss_max_chroma``) area with the loss signature of :func:`loss_signature`, found on the
    :func:`denoise`'d scan (robust to a noisy gesso). Returns ``(lab (K, 3), n_px (K,), noise_L (K,))``
    float64, the mean Lab, size and per-pixel noise (L*, :func:`component_features`; NaN for a candidate too
    small for an interior, whose grain is not measured) of each candidate (K may be 0). ``dpi``: a number or a
    :class:`~restoration.scale.Scale`.
    """
    from scipy import ndimage
    import cv2
    step = max(1, int(np.ceil((img.shape[0] * img.shape[1] / max_px) ** 0.5)))
    sub_scale = Scale.of(dpi).coarser(step)
    raw = np.ascontiguousarray(img[::step, ::step])
    sub = denoise(raw)
    lab = lab_of(sub)
    g = lab_grad(lab)
    cand = (g < cfg.flat_grad) & (np.hypot(lab[..., 1], lab[..., 2]) <= cfg.loss_max_chroma)
    cand &= lab[..., 0] >= cfg.ground_min_L
    L = np.ascontiguousarray(lab[..., 0])
    thin_dark = cv2.morphologyEx(L, cv2.MORPH_BLACKHAT, _disk(max(1, sub_scale.whole_px(0.085, 1)))) >= cfg.crack_low
    labels, n = ndimage.label(cand, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0)
    min_px = max(3, int(sub_scale.mm2_to_px_area(cfg.ground_vote_mm2)))  # at the subsampled scale
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = (sizes >= min_px) & (sizes <= cfg.loss_max_share * labels.size)
    keep[0] = False
    remap = np.zeros(n + 1, np.int32)
    remap[keep] = np.arange(1, int(keep.sum()) + 1)
    labels = remap[labels]
    if labels.max() == 0:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0)
    f = component_features(sub, labels, cv2.dilate(g, np.ones((3, 3), np.uint8)), cfg, tile=0, exclude=thin_dark,
                           raw=raw, interior=interior_of(labels))
    ok = loss_signature(f, labels.size, cfg) & (f["std_L"] <= cfg.ground_vote_std)
    # a voter has different paint all round: a piece of a painted form cut off by cracks finds its own
    # colour again beyond them (share of its ring, cracks left out, within max(loss_contrast_de, half its
    # contrast))
    # (the ring from 3 to 5 px out: the first pixels are the candidate's own rim, steep but its colour)
    lf = labels.astype(np.float32)
    dil = cv2.dilate(lf, np.ones((11, 11), np.uint8)).ravel().astype(np.int64)
    near = cv2.dilate(lf, np.ones((5, 5), np.uint8)).ravel() > 0
    ring = (dil > 0) & ~near & ~thin_dark.ravel()
    R = dil[ring]
    d = ciede2000(torch.from_numpy(lab.reshape(-1, 3)[ring].astype(np.float64)), torch.from_numpy(f["lab"][R])).numpy()
    same = np.bincount(R, d < np.maximum(cfg.loss_contrast_de, 0.5 * f["contrast"][R]), minlength=len(ok)) / np.maximum(np.bincount(R, minlength=len(ok)), 1)
    ok &= same <= cfg.ground_vote_same
    # the colour of an exposed ground: gesso and chalk, bole and ochres, umber or grey imprimaturas,
    # wood and canvas are neutral or warm (hue within ground_hue_deg) and not black; a dark purple or
    # green flat passage is paint, however flat
    lab_c = f["lab"]
    hue = np.degrees(np.arctan2(lab_c[:, 2], lab_c[:, 1])) % 360
    lo, hi = cfg.ground_hue_deg
    warm = (hue >= lo) & (hue <= hi)
    if prior:
        ok &= (lab_c[:, 0] >= cfg.ground_min_L) & ((f["chroma"] <= cfg.ground_neutral_chroma) | warm)
    # (a candidate too small for an interior has no measured grain: NaN, never 0, see measured_grain)
    return f["lab"][ok], f["n"][ok] * step * step, f["noise_L"][ok]


def measured_grain(noise_L: np.ndarray) -> Optional[float]:
    """The per-pixel grain (L*) a set of candidates shows: the median over the candidates whose grain is measured
    (finite ``noise_L``, (K,)); None when none is. A candidate too small for an interior has no measured grain, and
    counting it as smooth (0) made a noisy gesso whose small exposures outnumber its large ones read as flat paint
    (tune cell/13 at 512 px: 22 of 38 candidates unmeasured, the mode's grain 0.10 L* against 2.2 L* on its
    measured candidates and its losses)."""
    v = np.asarray(noise_L, np.float64)
    v = v[np.isfinite(v)]
    return round(float(np.median(v)), 3) if len(v) else None


def estimate_grounds(lab: np.ndarray, n_px: np.ndarray, cfg: Any, max_grounds: int = 2,
                     noise_L: Optional[np.ndarray] = None) -> List[dict]:
    """Ground colours from loss candidates: colour modes shared by several candidates.

    lab: (K, 3) candidate mean Lab (of the denoised scan); n_px: (K,) sizes; noise_L: (K,) their per-pixel
    noise (L*). Returns a list (at most ``max_grounds``) of ``{"lab", "rgb", "support": regions,
    "spread_de": median dE00 of the members to the mode, "noise_L": their grain, :func:`measured_grain`}`` ordered by
    support; a mode with fewer than ``ground_min_regions`` candidates is still returned (support tells
    how much it is worth), an empty list when there is no candidate. The mode is the median of the
    members (robust to a few paint patches among them).
    """
    from .color import lab_to_rgb
    lab = np.asarray(lab, np.float64)
    noise = np.full(len(lab), np.nan) if noise_L is None else np.asarray(noise_L, np.float64)
    out: list = []
    alive = np.ones(len(lab), bool)
    if len(lab) > 3000:  # bound the K x K comparison: keep the largest candidates
        alive[np.argsort(-np.asarray(n_px), kind="stable")[3000:]] = False
    while alive.any() and len(out) < max_grounds:
        idx = np.nonzero(alive)[0]
        t = torch.from_numpy(lab[idx])
        d = ciede2000(t[:, None, :], t[None, :, :]).numpy()
        near = d < cfg.ground_cluster_de
        support = near.sum(1)
        best = int(np.argmax(support))
        members = idx[near[best]]
        med = np.median(lab[members], axis=0)
        spread = ciede2000(torch.from_numpy(lab[members]), torch.from_numpy(med)).numpy()
        out.append({"lab": [float(v) for v in med],
                    "rgb": [float(v) for v in lab_to_rgb(torch.tensor(med, dtype=torch.float64)).tolist()],
                    "support": int(len(members)), "spread_de": round(float(np.median(spread)), 3),
                    "noise_L": measured_grain(noise[members])})
        alive[members] = False
    return out


def _ring_tiles(labels, ring_px, tile):
    """Walk ``labels`` tile by tile: yields ``(box, L, dil, ring)`` with the core ``box`` (y0, y1, x0, x1),
    its labels ``L`` (flat), the max-dilated labels ``dil`` (flat int64: the label owning each ring
    pixel, the higher id where rings meet) and the boolean ``ring`` (unlabelled pixels within
    ``ring_px`` Chebyshev of a label). Tiles read ``ring_px + 1`` px of context, so the walk is exact."""
    import cv2
    k = np.ones((2 * ring_px + 1, 2 * ring_px + 1), np.uint8)
    h, w = labels.shape
    for y0, y1, x0, x1, py0, py1, px0, px1 in tile_boxes(h, w, tile, ring_px + 1):
        L = labels[y0:y1, x0:x1].ravel()
        pad = labels[py0:py1, px0:px1].astype(np.float32)  # exact below 2^24 labels
        dil = cv2.dilate(pad, k)[y0 - py0:y1 - py0, x0 - px0:x1 - px0].ravel().astype(np.int64)
        yield (y0, y1, x0, x1), L, dil, (L == 0) & (dil > 0)


# evidence bits of the per-pixel ``evidence`` map (uint8) returned by :func:`detect_damage`; the review
# (:mod:`restoration.review`) turns them into reasons
EVIDENCE = {"ground_confirmed": 1,   # colour of a ground given by the user or shared by several candidates
            "ground_unconfirmed": 2,  # colour of a single candidate only: no ground confirmed on the scan
            "low_contrast": 4,        # contrast to its surroundings below 1.5 x loss_contrast_de
            "weak_edge": 8,           # sharp edge on less than 85 % of its outline
            "textured": 16,           # interior less flat than a ground usually is
            "colour_off": 32,         # mean colour further than loss_match_de from the ground colour
            "mixed_ring": 64,         # differs point by point only: its ring's mean colour is near its own
            "unlike_ground": 128}     # per-pixel texture unlike its ground's, or an edge that blends (paint?)


def grain_shared(g: dict, cfg: Any) -> Optional[bool]:
    """Whether a candidate ground's candidates and the losses it explains share one per-pixel grain (L* noise,
    ``noise_L`` and ``noise_ref_L``): an exposed ground is one material wherever it shows, flat paint patches of one
    colour have no grain, or not the same in their large and small patches. True when both are measurable (at least
    ``loss_noise_floor``) and agree within ``doubt_noise`` either way; False when either is measurable and they differ
    by more (the smaller floored at 0.3 L*, as :func:`~restoration.losses.loss_confidence` compares a loss's noise);
    None when neither can be measured, or one is missing (no proof either way)."""
    a, b = g.get("noise_L"), g.get("noise_ref_L")
    if a is None or b is None:
        return None
    lo, hi = sorted((float(a), float(b)))
    if hi < cfg.loss_noise_floor:
        return None
    if lo >= cfg.loss_noise_floor and hi <= cfg.doubt_noise * lo:
        return True
    return False if hi > cfg.doubt_noise * max(lo, 0.3) else None


def ground_confirmed(g: dict, cfg: Any) -> bool:
    """Whether the losses of ground ``g`` (a record of :func:`restoration.detect.detect_damage`'s ``grounds``) count as
    on a confirmed ground: given by the user (support -1), shared by ``ground_min_regions`` candidates or confirmed
    by the losses it explains, of a plausible colour; a candidate beside the first only when its losses confirm it;
    never when another candidate explains them as well (``ambiguous``) or when its losses would cover more of the
    picture than ``ground_max_share`` (``explains_most``: that is the picture's paint); nor when its candidates confirm
    it but show neither sign of one exposed material: they spread beyond ``ground_loose_de`` (a ground is one colour
    wherever it shows) and their grain contradicts its losses' (:func:`grain_shared` False; tune brick/11 at 256 px:
    8 candidates of the bricks' grey-blue paint spread 1.45 dE00, 3.1 L* against the losses' 5.0 L*, filled 98 %
    intact paint). The one rule of :func:`loss_confidence` and of the detector's ordering of grounds."""
    own = g.get("support", 0) >= cfg.ground_min_regions and g.get("confirmed_by") != "losses"
    loose_paint = own and (g.get("spread_de") or 0.0) > cfg.ground_loose_de and grain_shared(g, cfg) is False
    return (g.get("support", 0) < 0 or g.get("support", 0) >= cfg.ground_min_regions
            or g.get("confirmed_by") == "losses") and bool(g.get("plausible", True)) \
        and (g.get("role") != "other" or g.get("confirmed_by") == "losses") \
        and not g.get("ambiguous") and not g.get("explains_most") and not loose_paint


def loss_confidence(f: dict, grounds: List[dict], cfg: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Per loss component a confidence in 0..255 (uint8) and evidence bits (uint8, :data:`EVIDENCE`).

    confidence = support x match x contrast margin x edge share, where support is 1 for a ground given
    by the user, shared by ``ground_min_regions`` candidates or confirmed by the losses it explains
    (``confirmed_by`` "losses", :func:`restoration.detect.detect_damage`) and 0.5 otherwise, match is 1 when the
    component's mean colour lies within the ground's ``match_de`` (``loss_match_de`` unless the ground
    says otherwise) and 0.5 otherwise (paint of a
    similar colour: seeds reach ``auto_seed_de``, a loss's mean sits much closer), the contrast margin
    sqrt(min(1, contrast / (2 loss_contrast_de))) and the edge share ``edge_frac``. A loss found by its
    point-by-point contrast only (mean contrast <= ``loss_contrast_de``) gets half (``mixed_ring``). So does one
    unlike its ground (``unlike_ground``): a per-pixel texture beyond ``loss_noise_ratio`` of the losses', an
    interior less flat than ``loss_std_ratio`` x theirs, or ``loss_doubts`` doubts (colour beyond ``doubt_colour``
    x the match tolerance, a broken edge on less than ``doubt_sharp`` of the outline, texture off by ``doubt_noise``
    or flatness above ``doubt_std`` x theirs). A loss every other check vouches for (confirmed ground, colour matched,
    ring differing on average, flat, nothing unlike the ground, and a grain its ground's candidates do not contradict,
    :func:`grain_shared` not False) has edge share and contrast margin 1: the signature's ``loss_edge_frac`` and
    ``loss_contrast_de`` suffice, the rest of its outline may blend (a large soft loss's frayed edge).
    """
    n = len(f["n"])
    lab = torch.from_numpy(f["lab"])
    support = np.zeros(n)
    confirmed = np.zeros(n, bool)
    best = np.full(n, np.inf)
    tol = np.full(n, cfg.loss_match_de)
    given = np.zeros(n, bool)
    contradicted = np.zeros(n, bool)   # on a ground whose candidates' grain contradicts its losses' (grain_shared False)
    grainy = np.zeros(n, bool)         # ... or whose candidates show its losses' grain (grain_shared True)
    for g in grounds:
        d = ciede2000(lab, torch.tensor(g["lab"], dtype=torch.float64)).numpy()
        closer = d < best
        best = np.where(closer, d, best)
        confirmed = np.where(closer, ground_confirmed(g, cfg), confirmed)
        shared = grain_shared(g, cfg)
        contradicted = np.where(closer, shared is False, contradicted)
        grainy = np.where(closer, shared is True, grainy)
        tol = np.where(closer, g.get("match_de", cfg.loss_match_de), tol)
        # (a ground no crowd of candidates vouches for: given by the user, or confirmed by the few losses it explains)
        given = np.where(closer, g.get("source") == "given" or g.get("confirmed_by") == "losses", given)
    support = np.where(confirmed, 1.0, 0.5)
    off = best > tol
    support = support * np.where(off, 0.5, 1.0)
    # a loss that differs from its ring point by point but not on average (the ring mixes lighter and
    # darker paint) may have paint of the ground's colour on its outline, which its component then
    # takes in: half the confidence, so it is listed for review rather than filled
    mixed = f["contrast"] <= cfg.loss_contrast_de
    support = support * np.where(mixed, 0.5, 1.0)
    # evidence a painted highlight lacks: the ground's own per-pixel texture (noise measured on the loss
    # candidates) and an edge that breaks the paint (a step of most of the contrast between neighbours)
    g_noise, g_std = np.full(n, np.nan), np.full(n, np.nan)
    for g in grounds:
        ref = g.get("noise_ref_L", g.get("noise_L"))
        if ref is not None and ref >= cfg.loss_noise_floor:   # a ground texture the scan can measure
            g_noise[:] = float(ref)
        if g.get("flat_ref_L") is not None:
            g_std[:] = float(g["flat_ref_L"])
    own = np.asarray(f.get("noise_L", np.full(n, np.nan)), np.float64)
    with np.errstate(invalid="ignore"):
        ratio = np.maximum(own, 0.3) / g_noise
        # (grainier than the losses by loss_noise_ratio is paint's texture, proof alone; smoother is proof only on a
        # ground whose candidates show the losses' grain (grain_shared: the ground is grainy wherever it shows), else
        # one doubt (noise_doubt below): the losses' grain is then not the ground's for certain, they can expose it
        # smoother in one place than in another, and flat paint of the ground's colour seldom shows no second doubt)
        tex_off = np.isfinite(g_noise) & np.isfinite(own) & ((ratio > cfg.loss_noise_ratio)
                                                             | (grainy & (ratio < 1 / cfg.loss_noise_ratio)))
        # brush texture: less flat than the picture's losses are (std of L* inside, the denoised scan)
        streaked = np.isfinite(g_std) & (f["std_L"] > cfg.loss_std_ratio * g_std + 0.5)
    sharp = np.asarray(f.get("sharp_frac", np.ones(n)), np.float64)
    # doubts: none damning alone, a loss seldom has two (flat paint of a colour near the ground's, or a loss
    # merged with it, does): its colour towards the edge of its ground's tolerance, an edge that breaks the
    # paint on less of its outline than losses do (a loss's anti-aliased edge can blend nearly as much as a
    # painted one, so a blended edge alone is no proof), a per-pixel noise or flatness off the losses' own
    with np.errstate(invalid="ignore"):
        doubts = (best > cfg.doubt_colour * tol).astype(int) + (sharp < cfg.doubt_sharp).astype(int)
        noise_doubt = np.isfinite(g_noise) & np.isfinite(own) & ((ratio > cfg.doubt_noise) | (ratio < 1 / cfg.doubt_noise))
        std_doubt = np.isfinite(g_std) & (f["std_L"] > cfg.doubt_std * g_std + 0.5)
        # a ground the user gives has no candidates that vouch for its colour: the texture its losses share is the
        # scan's only sign of exposed ground, and a region too thin for an interior cannot show it (a painted star
        # point or stroke of a colour near the ground's): no proof either way, a doubt
        unseen = given & np.isfinite(g_noise) & ~np.isfinite(own)
    doubts = doubts + (noise_doubt | std_doubt | unseen).astype(int)
    # what is left of a loss that a piece without the losses' grain was cut from (restoration.detect) was merged with
    # smooth paint of a near colour and may be more of it: unless it shows the losses' grain itself (a gesso's body
    # does), it is unlike them
    merged = np.asarray(f.get("merged_smooth", np.zeros(n, bool)), bool)
    with np.errstate(invalid="ignore"):
        merged_off = merged & np.isfinite(g_noise) & (noise_doubt | ~np.isfinite(own))
    unlike = tex_off | streaked | (doubts >= cfg.loss_doubts) | merged_off
    support = support * np.where(unlike, 0.5, 1.0)
    # the contrast a loss shows to the paint around it, point by point where that is larger than its mean's (a loss
    # among lighter and darker paint: the ring's mean colour comes closer to its own than any of its pixels)
    seen = np.maximum(f["contrast"], np.asarray(f.get("ring_de", f["contrast"]), np.float64))
    margin = np.sqrt(np.clip(seen / (2 * cfg.loss_contrast_de), 0, 1))
    # the edge share counts only the outline where an edge can be seen (the paint beside differs) when the paint
    # differs nearly all round (ring_seen_share of the ring point by point): where more of the ring has the loss's own
    # colour, the region may run on into paint of that colour, and the missing edge there counts against it
    # (and its edge breaks the paint, no blended-edge doubt: a loss merged with a highlight blends where they meet)
    # (or, on a ground its candidates vouch for, with no doubt but that blended edge and nothing unlike the ground: an
    # anti-aliased edge blends along much of a real loss's outline; smooth paint merged with a loss where the losses
    # share a grain is cut off from it first (restoration.detect). Not on a ground given or confirmed by a few losses:
    # a loss there is judged whole within the tolerance, and paint of a near colour merges more easily)
    ring_all = np.asarray(f.get("ring_differs", np.zeros(n)), np.float64) >= cfg.ring_seen_share
    seen_ok = ring_all & ((sharp >= cfg.doubt_sharp) | (~given & (doubts <= 1) & ~unlike))
    edge = np.where(seen_ok, np.asarray(f.get("edge_seen", f["edge_frac"]), np.float64), f["edge_frac"])
    low_contrast = seen < 1.5 * cfg.loss_contrast_de
    textured = f["std_L"] > 0.6 * cfg.loss_flat_std
    # a loss every other check vouches for (a confirmed ground, its colour matched, a ring that differs on average, a
    # flat interior, nothing unlike the ground, and the ground's grain not contradicted by its candidates) needs no more
    # edge and contrast than the signature asks (loss_edge_frac, loss_contrast_de): the rest of its outline may blend,
    # as a frayed or anti-aliased edge of a large soft loss does, and a contrast below 1.5 loss_contrast_de is no
    # doubt on its own (a low-contrast loss whose ring differs on part of it only, tune camera/12 at 512 px: 0.48 -> 0.60);
    # where the candidates' grain contradicts the losses' (a highlight merged with a loss on a given ground), the
    # blended edge and the contrast margin still count
    vouched = confirmed & ~off & ~mixed & ~unlike & ~textured & ~contradicted
    edge = np.where(vouched, 1.0, edge)
    margin = np.where(vouched, 1.0, margin)
    conf = support * margin * np.clip(edge, 0, 1)
    bits = np.where(confirmed, EVIDENCE["ground_confirmed"], EVIDENCE["ground_unconfirmed"])
    bits = bits | np.where(low_contrast, EVIDENCE["low_contrast"], 0)
    bits = bits | np.where(f["edge_frac"] < 0.85, EVIDENCE["weak_edge"], 0)
    bits = bits | np.where(textured, EVIDENCE["textured"], 0)
    bits = bits | np.where(off, EVIDENCE["colour_off"], 0)
    bits = bits | np.where(mixed, EVIDENCE["mixed_ring"], 0)
    bits = bits | np.where(unlike, EVIDENCE["unlike_ground"], 0)
    return np.clip(np.round(conf * 255), 0, 255).astype(np.uint8), bits.astype(np.uint8)


def split_necks(mask: np.ndarray, neck_px: int, rim_px: Optional[int] = None) -> np.ndarray:
    """Label a loss mask ((H, W) bool) so that a part joined to the rest by a neck narrower than
    ``2 neck_px + 1`` px is a component of its own: int32 (H, W) labels, 0 = none.

    The body of each component is what an opening by a disk of radius ``neck_px`` keeps, with the rim
    within ``rim_px`` (default ``neck_px + 1``) px of it (the frayed edge stays with its loss). What lies
    beyond (a thin light line the loss touches, a thin tail) becomes separate components, cut from the body by one pixel, so a
    loss is never merged with a thin linear feature: each part is then tested on its own (a thin part is
    narrower than the registration tolerance and is not filled). A component too thin to have a body is
    kept whole."""
    import cv2
    from scipy import ndimage
    m = np.asarray(mask, bool)
    st = np.ones((3, 3), bool)
    if neck_px <= 0 or not m.any():
        return ndimage.label(m, structure=st)[0].astype(np.int32)
    body = cv2.morphologyEx(m.view(np.uint8), cv2.MORPH_OPEN, _disk(neck_px)) > 0
    near = cv2.dilate(body.view(np.uint8), _disk(neck_px + 1 if rim_px is None else max(1, rim_px))) > 0
    core = m & near
    thin = m & ~near
    # a component with no body at all stays whole (specks, thin scratches of ground colour)
    lab_all, n_all = ndimage.label(m, structure=st)
    has_body = np.zeros(n_all + 1, bool)
    has_body[np.unique(lab_all[body])] = True
    has_body[0] = False
    whole = m & ~has_body[lab_all]
    core &= has_body[lab_all]
    thin &= has_body[lab_all]
    thin &= ~(cv2.dilate(core.view(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    out = np.zeros(m.shape, np.int32)
    n = 0
    for part in (core, thin, whole):
        lab, k = ndimage.label(part, structure=st)
        out[lab > 0] = lab[lab > 0] + n
        n += k
    return out


def lab_step(lab: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 Lab -> (H, W) float32: the largest Lab distance to a 4-neighbour (right or down
    difference at the pixel and at its left / upper neighbour). A physical break is a step of nearly
    the whole contrast between two neighbours; a painted edge blends over several pixels."""
    d = np.zeros(lab.shape[:2], np.float32)
    dx = np.sqrt(((lab[:, 1:] - lab[:, :-1]) ** 2).sum(-1))
    dy = np.sqrt(((lab[1:] - lab[:-1]) ** 2).sum(-1))
    d[:, 1:] = np.maximum(d[:, 1:], dx)
    d[:, :-1] = np.maximum(d[:, :-1], dx)
    d[1:] = np.maximum(d[1:], dy)
    d[:-1] = np.maximum(d[:-1], dy)
    return d


def edge_share(labels: np.ndarray, step_max: np.ndarray, thr: np.ndarray, tile: int = 2048) -> np.ndarray:
    """Per label the share of its 1 px ring where ``step_max`` ((H, W), any dtype) reaches the label's
    ``thr`` ((N + 1,), same units): (N + 1,) float64. Computed tile by tile (exact)."""
    hit, tot = _edge_counts(labels, step_max, thr, tile)
    return hit / np.maximum(tot, 1)


def _edge_counts(labels: np.ndarray, step_max: np.ndarray, thr: np.ndarray, tile: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per label (N + 1,) float64 ``(hit, tot)``: the pixels of its 1 px ring where ``step_max`` (H, W)
    reaches the label's ``thr`` ((N + 1,)), and all of its ring's pixels; tile by tile (exact)."""
    n = int(labels.max())
    hit, tot = np.zeros(n + 1), np.zeros(n + 1)
    for (y0, y1, x0, x1), L, dil, ring in _ring_tiles(labels, 1, tile):
        R = dil[ring]
        g = step_max[y0:y1, x0:x1].ravel()[ring]
        tot += np.bincount(R, minlength=n + 1)
        hit += np.bincount(R, (g >= thr[R]).astype(np.float64), minlength=n + 1)
    return hit, tot


def interior_of(labels: np.ndarray, r: int = 2) -> np.ndarray:
    """(H, W) bool: labelled pixels whose (2r+1)^2 neighbourhood lies in the same label (the texture of a
    component is measured there, away from its outline)."""
    import cv2
    lf = labels.astype(np.float32)
    k = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    return (labels > 0) & (cv2.erode(lf, k) == lf) & (cv2.dilate(lf, k) == lf)


def split_unlike(labels: np.ndarray, de: np.ndarray, keep: np.ndarray, cfg: Any,
                 extra_off: Optional[np.ndarray] = None, interior: Optional[np.ndarray] = None
                 ) -> Tuple[np.ndarray, dict]:
    """Cut from each kept loss the parts whose colour the picture's losses do not share (flat paint of a colour
    near the ground's that a loss touches: a highlight stroke wider than a neck).

    labels: (H, W) int32 loss components (0 = none, N = max); de: (H, W) uint8 dE00 of the denoised scan to
    the loss's ground in units of 1/RESP_SCALE; keep: (N + 1,) bool, the components with the loss signature.
    The colour the losses share is measured on their interiors (pixels whose 5 x 5 neighbourhood is the
    same loss, away from the anti-aliased rim): a pixel lies off it beyond ``median + split_mad x MAD``
    (never below ``split_min_de``). Off pixels of an interior, opened by a 3 x 3 disk, that form a part of at
    least ``split_min_px`` px of a loss that keeps a body as large, become a component of their own with
    their rim (within 2 px), cut from the body by one pixel (dropped), so each part is tested on its own.
    ``extra_off``: optional (H, W) bool, more pixels off what the losses share (:func:`smooth_off`), cut the same way.
    ``interior``: :func:`interior_of` of ``labels`` where the caller has it (else computed here).
    Returns ``(labels int32 (H, W), stats)``; unchanged labels when nothing is cut."""
    stats: dict = {"split_de": None, "cut": 0}
    got = _kept_interior(labels, de, keep, interior)
    if got is None:
        return labels, stats
    inner, v = got
    med = float(np.median(v))
    mad = 1.4826 * float(np.median(np.abs(v - med)))
    t = max(cfg.split_min_de, med + cfg.split_mad * mad)
    stats["split_de"] = round(t, 3)
    # the same test per possible uint8 value (a 256-entry table): no float64 copy of the whole scan
    off = inner & (np.arange(256, dtype=np.float64) / RESP_SCALE > t)[de]
    if extra_off is not None:
        off |= extra_off
    out, stats["cut"] = _cut_parts(labels, off, cfg)
    return out, stats


def _kept_interior(labels: np.ndarray, values: np.ndarray, keep: np.ndarray, interior: Optional[np.ndarray] = None,
                   min_px: int = 50) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The interior pixels of the kept losses ((H, W) bool: :func:`interior_of`, given as ``interior`` or computed,
    and ``keep[labels]``) and their ``values`` ((H, W) uint8 in 1/RESP_SCALE units) as float64; None when no loss is
    kept or the interiors hold fewer than ``min_px`` pixels (too few to measure what the losses share)."""
    if int(labels.max()) == 0 or not keep.any():
        return None
    inner = (interior_of(labels) if interior is None else interior) & keep[labels]
    v = values[inner].astype(np.float64) / RESP_SCALE
    return None if v.size < min_px else (inner, v)


def smooth_off(labels: np.ndarray, grain: np.ndarray, keep: np.ndarray, cfg: Any, interior: Optional[np.ndarray] = None
               ) -> Tuple[Optional[np.ndarray], Optional[float]]:
    """The interior pixels of the kept losses that lack the grain the picture's losses share (a smooth light line or
    highlight of a colour near the ground's merged with a loss of a grainy gesso: colour alone cannot part them).

    labels: (H, W) int32 loss components; grain: (H, W) uint8 local per-pixel texture (L*, 1/RESP_SCALE units: the
    root mean square over 5 x 5 of the scan's L* minus the denoised scan's); keep: (N + 1,) bool. The losses' grain is
    the median over their interiors; only when it is measurable (at least ``loss_noise_floor``) are the interior
    pixels below it / ``loss_noise_ratio`` returned ((H, W) bool, else None), with that median (L*, or None).
    ``interior``: :func:`interior_of` of ``labels`` where the caller has it (else computed here)."""
    got = _kept_interior(labels, grain, keep, interior)
    if got is None:
        return None, None
    inner, v = got
    med = float(np.median(v))
    if med < cfg.loss_noise_floor:
        return None, round(med, 3)
    return inner & (np.arange(256, dtype=np.float64) / RESP_SCALE < med / cfg.loss_noise_ratio)[grain], round(med, 3)


def _cut_parts(labels: np.ndarray, off: np.ndarray, cfg: Any) -> Tuple[np.ndarray, int]:
    """The parts of ``off`` ((H, W) bool, interior pixels of losses off what the losses share), opened by a 3 x 3
    disk, of at least ``split_min_px`` px in a loss that keeps a body as large, made components of their own with
    their rim (within 2 px), cut from the body by one pixel (dropped). Returns ``(labels int32, parts cut)``."""
    import cv2
    from scipy import ndimage
    n = int(labels.max())
    off = cv2.morphologyEx(off.view(np.uint8), cv2.MORPH_OPEN, _disk(1)) > 0
    if not off.any():
        return labels, 0
    st = np.ones((3, 3), bool)
    lab_o, n_o = ndimage.label(off, structure=st)
    size_o = np.bincount(lab_o.ravel(), minlength=n_o + 1)
    owner = np.zeros(n_o + 1, np.int64)
    np.maximum.at(owner, lab_o.ravel(), labels.ravel())
    size_l = np.bincount(labels.ravel(), minlength=n + 1)
    big = (size_o >= cfg.split_min_px) & (size_l[owner] >= size_o + cfg.split_min_px)
    big[0] = False
    if not big.any():
        return labels, 0
    part = big[lab_o]
    # the part with its rim: the off pixels grown 2 px within their own loss
    grown = cv2.dilate(lab_o.astype(np.float32) * part, _disk(2)).astype(np.int32)
    part = (grown > 0) & (labels == owner[grown]) & (labels > 0)
    gap = (cv2.dilate(part.view(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~part & (labels > 0) & np.isin(labels, np.unique(labels[part]))
    body = (labels > 0) & ~part & ~gap
    out = np.zeros(labels.shape, np.int32)
    k = 0
    for m in (body, part):
        lab, c = ndimage.label(m, structure=st)
        out[lab > 0] = lab[lab > 0] + k
        k += c
    return out, int(big.sum())
