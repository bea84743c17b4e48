"""Damage detection per class on CIELAB, with response maps, a confidence and evidence (spec 4.2, N2).

Losses are found by local evidence, not by one global colour (issue 11). A loss is a region that
differs from its own surroundings with the signature of missing paint (:func:`loss_signature`): a
contrast to the ring around it (thin dark lines left out of the ring, so a paint island between cracks
is no loss), in its mean colour or point by point (most of the ring differs: a loss across light and
dark paint whose ring averages to the ground's colour; such a loss goes to review, see
:func:`loss_confidence`), a sharp edge all round, a flat interior, not a background that fills the picture or runs
along its border. The ground colour, when not given, is estimated only from such candidates
(:func:`ground_candidates`, :func:`estimate_grounds`): flat low-chroma areas with the signature, large
and flat enough, with different paint all round and a plausible ground colour (not black; neutral or
warm), vote, and the colour most of them share is the ground. No candidate, no ground, no loss (other
classes are unaffected; give ``ground_rgb`` to search for a ground colour anyway). A ground shared by
fewer than ``ground_min_regions`` candidates is used but unconfirmed: its losses get half the
confidence and go to review (:mod:`restoration.review`). Pixels within ``auto_seed_de`` of the ground
seed a loss, which grows by colour at most ``loss_grow_px``; each component is then tested for the
signature and given a confidence (:func:`loss_confidence`).

Craquelure is a dark thin line that is dark relative to the local paint: black-hat on L* with a
hysteresis whose thresholds also scale with the local mean top-hat (hair, fur, grass, wood grain and
brush strokes are dark lines between light ones), then components too shallow or long and straight
(outlines) are dropped (:func:`_crack_gate`). Light small defects (scratches) are the mirror image
(top-hat against the local black-hat).

Local responses are computed tile by tile with an overlap larger than the biggest morphological reach,
so they equal the untiled result exactly; decisions that need whole components run on full-size
uint8/int32 maps (component statistics walk the tiles, exactly).
"""

from __future__ import annotations
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from .classes import CLASS_IDS
from .color import ciede2000, rgb_to_lab
from .scale import Scale
from .settings import SETTINGS, check_tile
from .tiles import tile_boxes

from .losses import (EVIDENCE, RESP_SCALE, _disk, _ring_tiles, component_features, denoise,  # noqa: F401
                     edge_share, estimate_grounds, grain_shared, ground_candidates, ground_confirmed, lab_grad, lab_of, lab_step, label_lab_sums,
                     measured_grain,
                     loss_confidence, loss_signature, smooth_off, split_necks, split_unlike, interior_of)


@dataclass(frozen=True)
class DetectConfig:
    crack_radii_mm: tuple = (0.04, 0.085, 0.13)   # 1, 2, 3 px at 600 dpi
    crack_low: float = SETTINGS["crack_low"].default                         # L*
    crack_high: float = SETTINGS["crack_high"].default
    crack_min_px: int = 3
    crack_min_depth: float = 12.0                  # mean black-hat of a crack component (L*)
    crack_texture_ratio: float = 3.0               # seed black-hat >= this x (1 + local mean top-hat): not texture
    crack_texture_low: float = 2.5                 # the same for the hysteresis low mask
    crack_max_straight_mm: float = 1.0             # straight dark lines at least this long are outlines, not cracks
    crack_ring_ratio: float = 0.0                  # component depth >= this x (1 + mean top-hat in its ring)
    crack_thin_share: float = 0.0                  # share found at the smallest radius: not a painted line
    light_radii_mm: tuple = (0.04, 0.085)
    light_low: float = SETTINGS["light_low"].default
    light_high: float = SETTINGS["light_high"].default
    light_min_px: int = 6
    light_texture_ratio: float = 4.0               # seed top-hat >= this x (1 + local mean black-hat): not grain/gloss
    light_texture_low: float = 3.0                 # the same for the hysteresis low mask
    ground_rgb: Optional[tuple] = None             # None -> estimated from loss candidates (auto_ground)
    ground_tolerance_de: float = SETTINGS["ground_tolerance_de"].default  # around a ground the user gives
    ground_seed_de: float = SETTINGS["ground_seed_de"].default
    ground_grow_de: float = SETTINGS["ground_grow_de"].default
    loss_contrast_de: float = SETTINGS["loss_contrast_de"].default                  # a loss's mean colour differs from its ring's mean by this ...
    loss_ring_differs: float = 0.5                 # ... or this share of its ring differs from it by this
    loss_ring_px: int = 3
    flat_grad: float = 3.0                         # Lab units / px: below this a pixel is "flat"
    loss_max_chroma: float = 50.0                  # C*: exposed grounds are at most as chromatic as an ochre or a bole
    loss_edge_frac: float = 0.6                    # share of a loss's ring that must show a sharp edge
    loss_edge_rel: float = 0.25                    # "sharp": gradient >= this x the loss's contrast per px
    loss_flat_std: float = 4.0                     # L* std inside a loss (paint is textured, grounds flat)
    loss_max_share: float = 0.2                    # a component covering more of the picture is no loss
    loss_border_frac: float = 0.5                  # at most this share of a loss's outline on the image border
    loss_grow_px: int = 1                          # a loss grows (by colour) at most this far from its seed
    auto_seed_de: float = 3.5                      # seed dE00 to a ground estimated from the losses themselves
    loss_match_de: float = 2.5                     # a loss's mean colour lies this close to its ground (else unsure)
    ground_cluster_de: float = 6.0                 # candidates within this dE00 share a ground colour
    ground_min_regions: int = 8                    # candidates needed before a colour counts as a ground
    ground_tight_de: float = 2.0                   # a ground's candidates agree within this (median dE00 to the mode)
    ground_confirm_losses: int = 4                 # ... or this many of its losses match it with nothing unlike it
    ground_loose_de: float = 1.0                   # a ground its candidates confirm, spread beyond this, is checked ...
    ground_rival_spread: float = 0.5               # ... against a plausible candidate agreeing within this x its spread
    ground_grain_support: float = 0.3              # a grainy mode this well supported (x the best) beats a smooth one
    ground_min_L: float = 25.0                     # grounds (gesso, bole, imprimatura, wood) are not black
    ground_hue_deg: tuple = (15.0, 110.0)          # a chromatic ground is warm (reds, browns, ochres, creams)
    ground_neutral_chroma: float = 8.0             # below this C* any hue is a neutral (grey, white) ground
    ground_vote_mm2: float = 0.03                  # candidates that vote for a ground: at least this large ...
    ground_vote_std: float = 2.0                   # ... and this flat (L* std): small flat paint patches do not vote
    ground_vote_same: float = 0.1                  # ... and its own colour on at most this share of its ring
    ground_max_share: float = 0.5                  # an estimated ground explaining more of the picture is its paint
    auto_grounds: int = 3                          # candidate grounds estimated; beyond the first, only confirmed ones seed
    neck_px: int = 3                               # parts of a loss joined by a neck narrower than 2 x this + 1 are split
    neck_rim_px: int = 2                           # ... keeping the rim within this of the body (its frayed edge)
    split_mad: float = 4.0                         # a loss's part off the losses' shared colour by median + this x MAD ...
    split_min_de: float = 1.5                      # ... (never less than this dE00) ...
    split_min_px: int = 25                         # ... and at least this large is cut off and tested on its own
    doubtful_confidence: float = 0.25              # a cut piece without the signature stays a loss this sure (review)
    smooth_part_share: float = 0.25                # a cut piece this much of which lacks the losses' grain: review
    loss_noise_ratio: float = 1.6                  # a loss's per-pixel noise within this factor of the losses'
    loss_match_ref: float = 3.0                    # a loss's colour within this x the losses' median distance to the ground
    loss_match_min_de: float = 1.5                 # ... but never tighter than this
    loss_noise_floor: float = 0.7                  # the losses' per-pixel noise (L*) below which texture is not compared
    loss_std_ratio: float = 2.0                    # interior L* std within this x the losses' (+ 0.5): else brushwork
    loss_sharp_rel: float = 0.45                   # "broken edge": a step of this x contrast between neighbours
    ring_seen_share: float = 0.9                   # an edge is asked for only where it can be seen when this share of the ring differs
    # doubts: evidence that is not damning alone, but a loss seldom shows two of them (measured on the tune half
    # of the issue-21 benchmark: flat light paint beside the ground's colour, or a loss merged with it, does)
    doubt_colour: float = 0.6                      # mean colour beyond this share of its ground's match tolerance
    doubt_sharp: float = 0.8                       # broken edge on less than this share of the outline (paint blends)
    doubt_noise: float = 1.3                       # per-pixel noise off the losses' by this factor (either way)
    doubt_std: float = 1.5                         # interior L* std above this x the losses' (+ 0.5)
    loss_doubts: int = 2                           # this many doubts: unlike the ground (review, never a default fill)
    ground_tinted_chroma: float = 25.0             # a ground of an unusual hue is confirmed only this close to neutral ...
    ground_tinted_support: float = 2.0             # ... shared by this x ground_min_regions candidates ...
    ground_tinted_spread: float = 0.5              # ... agreeing within this x ground_tight_de (a greenish chalk)
    split_min_length_mm: float = SETTINGS["split_min_length_mm"].default
    split_min_width_mm: float = 0.2
    split_radius_mm: float = 0.25
    split_low: float = 12.0
    split_bridge_mm: float = 1.5
    light_max_crack_ring: float = 0.3              # light spots ringed by craquelure are paint islands
    tile: int = SETTINGS["tile"].default

    #: the fields a user sets (node widgets, CLI flags): checked by their records of
    #: :data:`restoration.settings.SETTINGS`; the others are the method's constants.
    RECORDS = ("crack_low", "crack_high", "light_low", "light_high", "ground_tolerance_de", "ground_seed_de", "ground_grow_de",
               "loss_contrast_de", "split_min_length_mm", "tile")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "DetectConfig":
        """Every setting checked by its record, then the cross-field rules; ValueError (a
        :class:`~atelier_settings.SettingError` for one setting) naming the setting."""
        for k in self.RECORDS:
            SETTINGS[k].check(getattr(self, k))
        check_tile(self.tile)
        check_order({k: getattr(self, k) for k in self.RECORDS})
        for k in ("auto_seed_de", "loss_contrast_de", "flat_grad", "loss_flat_std", "loss_match_de",
                  "ground_cluster_de", "crack_min_depth", "crack_texture_ratio", "crack_texture_low",
                  "light_texture_ratio", "light_texture_low", "crack_max_straight_mm", "doubt_colour", "doubt_sharp",
                  "doubt_noise", "doubt_std", "ground_tinted_chroma", "ground_tinted_support", "ground_tinted_spread",
                  "ground_loose_de", "ground_rival_spread"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k}={getattr(self, k)} must be >= 0")
        for k in ("loss_edge_frac", "loss_ring_differs", "ring_seen_share", "smooth_part_share", "loss_max_share", "loss_border_frac", "ground_max_share", "ground_vote_same", "crack_thin_share"):
            if not 0 <= getattr(self, k) <= 1:
                raise ValueError(f"{k}={getattr(self, k)} must be in 0..1")
        if not 0 <= self.doubtful_confidence <= 1:
            raise ValueError(f"doubtful_confidence={self.doubtful_confidence} must be in 0..1")
        if self.split_mad < 0 or self.split_min_de < 0 or self.split_min_px < 1:
            raise ValueError(f"split_mad={self.split_mad}, split_min_de={self.split_min_de} must be >= 0 and "
                             f"split_min_px={self.split_min_px} >= 1")
        if not 0 <= self.ground_grain_support <= 1:
            raise ValueError(f"ground_grain_support={self.ground_grain_support} must be in 0..1")
        if self.ground_confirm_losses < 1:
            raise ValueError(f"ground_confirm_losses={self.ground_confirm_losses} must be >= 1")
        if self.auto_grounds < 1 or self.loss_grow_px < 0:
            raise ValueError(f"auto_grounds={self.auto_grounds} must be >= 1 and loss_grow_px={self.loss_grow_px} >= 0")
        if self.ground_rgb is not None and (len(self.ground_rgb) != 3 or not all(0 <= v <= 1 for v in self.ground_rgb)):
            raise ValueError(f"ground_rgb={self.ground_rgb!r} must be three values in 0..1")
        return self


#: (low, high) settings of which the first must not exceed the second
ORDERED = (("crack_low", "crack_high", "the hysteresis low threshold must be <= the high threshold"),
           ("light_low", "light_high", "the hysteresis low threshold must be <= the high threshold"),
           ("ground_seed_de", "ground_grow_de", "a loss cannot seed beyond where it may grow"))


def check_order(values: Mapping[str, Optional[float]]) -> None:
    """The cross-field rules of the detection settings (:data:`ORDERED`) on the ``values`` given (a missing
    or None value, e.g. a linked node input, skips its rule); ValueError naming both settings."""
    for lo, hi, why in ORDERED:
        a, b = values.get(lo), values.get(hi)
        if a is not None and b is not None and a > b:
            raise ValueError(f"{lo}={a:g} is above {hi}={b:g}: {why}")


def auto_ground(img: np.ndarray, max_px: int = 2_000_000, dpi: "float | Scale" = 600.0,
                cfg: Optional[DetectConfig] = None) -> Optional[tuple]:
    """The ground colour (sRGB tuple) the detector uses (:func:`candidate_grounds`), or None when no
    candidate is found. Not a global guess: only areas with the loss signature vote."""
    cfg = cfg or DetectConfig()
    g = candidate_grounds(img, dpi, cfg)
    return tuple(g[0]["rgb"]) if g else None


def _weighted_median(v: np.ndarray, w: np.ndarray) -> Optional[float]:
    """Median of ``v`` weighted by ``w`` (1-D), or None when empty."""
    if not len(v):
        return None
    o = np.argsort(v)
    c = np.cumsum(np.asarray(w, np.float64)[o])
    return round(float(np.asarray(v)[o][int(np.searchsorted(c, 0.5 * c[-1]))]), 3)


def candidate_grounds(img: np.ndarray, dpi: "float | Scale", cfg: DetectConfig) -> list:
    """The candidate grounds of a scan, best first (:func:`estimate_grounds` on :func:`ground_candidates`,
    each with ``support``, ``spread_de``, ``noise_L``, ``source`` and ``plausible``).

    An exposed ground is one colour wherever it shows, so its candidates agree closely (``spread_de`` at
    most ``ground_tight_de``), while a mode of paint patches is loose. First choice: the best-supported
    tight mode of a plausible ground colour (not black; neutral or warm) with ``ground_min_regions``
    candidates; when that mode is smooth, a mode whose candidates show a measurable per-pixel grain (``noise_L``
    at least ``loss_noise_floor``: an exposed ground) with ``ground_grain_support`` x its support comes first
    (the smooth one is flat paint) unless the smooth one is one colour and it is not, as does one with that grain and
    one colour (``spread_de`` within ``ground_loose_de``) when the first is grainy but loose (:func:`grain_beats`). Else a tight mode of any colour with that support (a greenish chalk ground, a cool grey
    imprimatura) is used but marked ``plausible`` False, which no loss confirms (:func:`loss_confidence`:
    review, never a default fill) unless it is a tinted neutral (C* at most ``ground_tinted_chroma``: a greenish
    chalk, a cool grey) shared by ``ground_tinted_support`` x ``ground_min_regions`` candidates within
    ``ground_tinted_spread`` x ``ground_tight_de``: then it is confirmed (``plausible`` "tinted"); a saturated
    colour of an unusual hue is pigment, never confirmed. Else the best-supported plausible mode, as it is."""
    lab_p, n_p, noise_p = ground_candidates(img, dpi, cfg)
    prior = estimate_grounds(lab_p, n_p, cfg, cfg.auto_grounds, noise_p)
    for g in prior:
        g.update(source="estimated", plausible=True)
    tight = lambda g: g["support"] >= cfg.ground_min_regions and g["spread_de"] <= cfg.ground_tight_de
    # among tight modes, the best supported; but when that one is smooth, a mode whose candidates show a
    # per-pixel grain the scan can measure (an exposed gesso, bole or chalk; noise_L at least loss_noise_floor)
    # and that is comparably supported (ground_grain_support x its support) comes first: the smooth one is a flat
    # passage of paint (brick faces, a sky, a poster's flat colour)
    best = sorted((g for g in prior if tight(g)), key=lambda g: g["support"], reverse=True)
    # (a comparably supported mode comes first when it shows every sign of one exposed material the first shows and one
    # more, a grain and one colour wherever it shows: grainy paint, gravel or grass, is spread in colour; tune gravel/9
    # at 512 px, a grey passage of 55 candidates spread 1.6 dE00 beside a bole of 34 within 0.43; grain_beats)
    if best:
        rival = [g for g in best if grain_beats(g, best[0], cfg)]
        if rival:
            best = rival[:1] + [g for g in best if g is not rival[0]]
    if best:
        return best[:1] + [g for g in prior if g is not best[0]]
    lab_a, n_a, noise_a = ground_candidates(img, dpi, cfg, prior=False)
    anyc = [g for g in estimate_grounds(lab_a, n_a, cfg, cfg.auto_grounds, noise_a) if tight(g)]
    if anyc:
        a = anyc[0]
        tinted = (float(np.hypot(a["lab"][1], a["lab"][2])) <= cfg.ground_tinted_chroma
                  and a["support"] >= cfg.ground_tinted_support * cfg.ground_min_regions
                  and a["spread_de"] <= cfg.ground_tinted_spread * cfg.ground_tight_de)
        return [dict(a, source="estimated", plausible="tinted" if tinted else False)] + prior[: cfg.auto_grounds - 1]
    return prior


def grain_beats(g: dict, first: dict, cfg: DetectConfig) -> bool:
    """Whether candidate ground ``g`` comes before ``first``, the best-supported tight mode (:func:`candidate_grounds`):
    it has at least ``ground_grain_support`` x its support, a grain, and every sign of one exposed material that
    ``first`` shows and one more. The signs: a per-pixel grain the scan can measure (``noise_L`` at least ``loss_noise_floor``;
    flat paint, brick faces, a sky, a poster's colour, has none) and one colour wherever it shows (``spread_de`` within
    ``ground_loose_de``; grainy paint of one hue, gravel, grass, is spread in colour). A grainy but loose mode does not
    beat a smooth tight one: each lacks a sign the other shows."""
    def signs(h: dict) -> set:
        return {s for s, ok in (("grain", (h.get("noise_L") or 0.0) >= cfg.loss_noise_floor),
                                ("one colour", (h.get("spread_de") or 0.0) <= cfg.ground_loose_de)) if ok}
    if g is first or g.get("support", 0) < cfg.ground_grain_support * first.get("support", 0):
        return False
    return "grain" in signs(g) and signs(g) > signs(first)


def _grain_agrees(g: dict, cfg: DetectConfig) -> bool:
    """Whether a candidate ground has the evidence of one exposed material: at least two candidates that agree within
    ``ground_loose_de`` (an exposed ground is one colour wherever it shows) and a per-pixel grain its candidates and the
    losses it explains share (:func:`~restoration.losses.grain_shared`). Flat paint patches of one colour have no
    grain, or not the same in their large and small patches."""
    return g.get("support", 0) >= 2 and (g.get("spread_de") or 0.0) <= cfg.ground_loose_de and grain_shared(g, cfg) is True


def _rivals(found: list, cfg: DetectConfig) -> list:
    """The candidates that challenge a first ground its candidates confirm: when those candidates spread beyond
    ``ground_loose_de`` (looser than an exposed ground's: it is one colour wherever it shows), the other plausible
    candidates of at least two that agree within ``ground_rival_spread`` x that spread (a dark passage of paint
    between a picture's objects is confirmed by many loose candidates; the gesso of a few losses is tight).
    Empty when none, or when the first is not confirmed by its candidates."""
    if not found or found[0].get("support", 0) < cfg.ground_min_regions or found[0].get("plausible", True) is not True:
        return []
    spread = found[0].get("spread_de") or 0.0
    if spread <= cfg.ground_loose_de:
        return []
    return [g for g in found[1:] if g.get("plausible", True) is True and g.get("support", 0) >= 2
            and (g.get("spread_de") or 0.0) <= cfg.ground_rival_spread * spread]


def _other_grounds(found: list, cfg: DetectConfig) -> list:
    """The candidate grounds that seed beside the first of ``found`` (best first, :func:`candidate_grounds`):
    none when the first is confirmed by its candidates (``ground_min_regions`` of them, a plausible colour) and
    no candidate rivals it (:func:`_rivals`: then only the rivals seed, and it is checked against them);
    else the other plausible candidates (at most ``auto_grounds`` in all) at least ``ground_cluster_de`` from
    every ground already taken. Each is marked ``role`` "other": it is never confirmed (its losses are
    listed for review, :func:`~restoration.losses.ground_confirmed`), and what it explains is reported (``explains_regions``,
    ``losses_agree``)."""
    if not found:
        return []
    pool = found[1:]
    if found[0].get("support", 0) >= cfg.ground_min_regions and bool(found[0].get("plausible", True)):
        # confirmed by its candidates: only its rivals seed beside it (:func:`_rivals`), and it is checked against them
        pool = _rivals(found, cfg)
        if not pool:
            return []
        found[0]["rivalled"] = True
    out: list = []
    for g in pool:
        if len(out) + 1 >= cfg.auto_grounds:
            break
        if g.get("plausible", True) is not True:
            continue
        lab = torch.tensor(g["lab"], dtype=torch.float64)
        if all(float(ciede2000(lab, torch.tensor(t["lab"], dtype=torch.float64))) > cfg.ground_cluster_de
               for t in [found[0]] + out):
            out.append(dict(g, role="other"))
    return out


def _several_grounds(grounds: list, results: list, cfg: DetectConfig) -> set:
    """Several candidate grounds checked against what each explains. A candidate could be the ground when it has a
    plausible colour, at least two candidates that agree (``spread_de`` within ``ground_tight_de``) and at least half
    of ``ground_confirm_losses`` losses that agree with it (``losses_agree``) and match it closely (``match_ref_de``
    within ``ground_tight_de``). A ground confirmed by its losses is no longer confirmed (its losses go to review)
    when another such candidate explains its losses about as well: at least half as many agreeing losses, or losses
    that match it more closely (a ground is one colour wherever it shows, paint patches of one colour spread more).
    Which is the ground and which a flat passage of paint is then ambiguous. Returns the indices of the grounds
    that lost that confirmation; they and their rivals are marked ``ambiguous``. A ground its losses confirm whose
    candidates and losses share a measurable grain (:func:`~restoration.losses.grain_shared`: one exposed material) is
    rivalled only by a candidate that shows a shared grain too: a passage of flat paint shows none. (A ground its
    candidates confirm, rivalled by a tighter one, :func:`_rivals`, is not spared so: dark paint shows a grain too.)"""
    if len(grounds) < 2:
        return set()
    tight = cfg.ground_tight_de

    def could(g: dict) -> bool:
        return (g.get("plausible", True) is True and g.get("support", 0) >= 2 and (g.get("spread_de") or 0.0) <= tight
                and g.get("match_ref_de") is not None and g["match_ref_de"] <= tight
                and 2 * g.get("losses_agree", 0) >= cfg.ground_confirm_losses)
    idx = [j for j, *_ in results]
    out = set()
    for j in idx:
        g = grounds[j]
        if g.get("confirmed_by") != "losses" and not g.get("rivalled"):
            continue
        # (a ground its losses confirm with a grain its candidates share: a rival without such a grain is none)
        one = g.get("confirmed_by") == "losses" and grain_shared(g, cfg) is True
        rivals = [r for r in idx if r != j and could(grounds[r]) and (not one or grain_shared(grounds[r], cfg) is True)
                  and (2 * grounds[r]["losses_agree"] >= g.get("losses_agree", 0) or grounds[r]["match_ref_de"] <= g["match_ref_de"])]
        if rivals:
            g["confirmed_by"] = None   # (a rivalled ground loses its candidates' confirmation: ambiguous, ground_confirmed)
            out.add(j)
            for r in [j] + rivals:
                grounds[r]["ambiguous"] = True
    return out


def _given_grain(noise_L: np.ndarray) -> float:
    """The grain of the candidates near a given ground as the rounds before measured it: a candidate too small for an
    interior counts as smooth (0 L*), not as unmeasured (:func:`~restoration.losses.measured_grain`, used for the
    estimated grounds). Kept so on purpose: measured, a given bole's candidates (tune retina/33 at 512 px, 1.07 ->
    1.58 L*) no longer contradict its losses' grain, and a loss merged with a thin light line there is vouched for
    (:func:`~restoration.losses.loss_confidence`) and filled: intact share of the fill 1.65 % -> 5.0 %. Until a loss
    is split from such a line, the given ground keeps the guard. (K,) float64 with NaN for unmeasured."""
    return measured_grain(np.nan_to_num(np.asarray(noise_L, np.float64), nan=0.0)) or 0.0


def user_ground(img: np.ndarray, dpi: "float | Scale", cfg: DetectConfig) -> list:
    """The ground the user gave (``cfg.ground_rgb``), used as given: pixels within ``ground_tolerance_de``
    of it seed a loss, and a loss matches it within the same tolerance (support -1: confirmed). What the
    scan says about it is reported beside it, never substituted: the loss candidates within the tolerance
    (``candidates_near``), their median colour's distance (``candidates_de``), spread and noise."""
    if cfg.ground_rgb is None:
        raise ValueError("user_ground needs a config with ground_rgb")
    rgb = [float(v) for v in cfg.ground_rgb]
    g_lab = rgb_to_lab(torch.tensor(rgb, dtype=torch.float64))
    tol = cfg.ground_tolerance_de
    given = {"lab": [float(v) for v in g_lab], "rgb": rgb, "support": -1, "given_rgb": rgb, "source": "given",
             "seed_de": tol, "match_de": tol, "candidates_near": 0, "noise_L": None, "spread_de": None}
    lab, _, noise = ground_candidates(img, dpi, cfg, prior=False)
    if len(lab):
        d = ciede2000(torch.from_numpy(lab), g_lab).numpy()
        near = d < max(tol, cfg.ground_cluster_de)
        if near.any():
            med = np.median(lab[near], axis=0)
            given.update(candidates_near=int(near.sum()), noise_L=_given_grain(noise[near]),
                         spread_de=round(float(np.median(ciede2000(torch.from_numpy(lab[near]),
                                                                    torch.from_numpy(med)).numpy())), 3),
                         candidates_de=round(float(ciede2000(torch.from_numpy(med), g_lab)), 3))
    return [given]


def _hysteresis(low, high, min_px=1):
    from scipy import ndimage
    lab, n = ndimage.label(low, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros_like(low, bool)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[high & low])] = True
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep &= sizes >= min_px
    keep[0] = False
    return keep[lab]


def label_ring_means(img: np.ndarray, labels: np.ndarray, ring_px: int, tile: int = 2048
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean Lab inside each label and in a ``ring_px`` (Chebyshev) ring outside it.

    Returns ``(inside (N+1, 3), ring (N+1, 3), n_inside (N+1,), n_ring (N+1,))``, float64.
    Ring pixels are unlabelled pixels within ``ring_px`` of a label; where rings of two labels meet,
    the higher id wins (max dilation). Computed tile by tile (exact).
    """
    s_in, _, c_in, s_ring, c_ring = label_lab_sums(img, labels, ring_px, tile)
    inside = s_in / np.maximum(c_in, 1)[:, None]
    ringm = s_ring / np.maximum(c_ring, 1)[:, None]
    return inside, ringm, c_in, c_ring


def label_ring_fraction(labels: np.ndarray, flag: np.ndarray, ring_px: int, tile: int = 2048) -> np.ndarray:
    """Per label, the fraction of its ``ring_px`` (Chebyshev) ring of unlabelled pixels where ``flag`` is
    set (rings of two labels that meet go to the higher id, as in :func:`label_ring_means`). Returns
    (N + 1,) float64 (0 where a label has no ring). Computed tile by tile (exact)."""
    n = int(labels.max())
    hit, tot = np.zeros(n + 1), np.zeros(n + 1)
    for (y0, y1, x0, x1), L, dil, ring in _ring_tiles(labels, ring_px, tile):
        tot += np.bincount(dil[ring], minlength=n + 1)
        hit += np.bincount(dil[ring & flag[y0:y1, x0:x1].ravel()], minlength=n + 1)
    return hit / np.maximum(tot, 1)


def _crack_gate(crack, resp, thin, cfg, mm_per_px):
    """Keep the crack components that look like craquelure, not like texture or painted lines.

    Per 8-connected component: ``depth`` = mean black-hat (L*) must reach ``crack_min_depth`` and
    ``crack_texture_ratio`` x (1 + the mean white top-hat in its 2 px ring): hair, fur, grass and brush
    strokes are dark lines between light ones, a crack is a dark line in paint that is otherwise even
    (darkness relative to the local paint); ``thin`` share (pixels that the smallest black-hat radius
    finds) must reach ``crack_thin_share``: a wider dark line is painted, not cracked. Returns
    ``(crack (H, W) bool, stats)``.
    """
    from scipy import ndimage
    labels, n = ndimage.label(crack, structure=np.ones((3, 3), bool))
    if n == 0:
        return crack, {"components": 0, "kept": 0}
    flat = labels.ravel()
    cnt = np.bincount(flat, minlength=n + 1).astype(np.float64)
    depth = np.bincount(flat, resp["crack_dark"].ravel().astype(np.float64), minlength=n + 1) / np.maximum(cnt, 1)
    depth /= RESP_SCALE
    thin_share = np.bincount(flat, thin.ravel(), minlength=n + 1) / np.maximum(cnt, 1) if thin is not None else 1.0
    tex = np.zeros(n + 1); tot = np.zeros(n + 1)
    for (y0, y1, x0, x1), L, dil, ring in _ring_tiles(labels, 2, cfg.tile):
        R = dil[ring]
        tot += np.bincount(R, minlength=n + 1)
        tex += np.bincount(R, resp["light"][y0:y1, x0:x1].ravel()[ring].astype(np.float64), minlength=n + 1)
    tex = tex / np.maximum(tot, 1) / RESP_SCALE
    keep = (depth >= cfg.crack_min_depth) & (depth >= cfg.crack_ring_ratio * (1 + tex))
    keep &= thin_share >= cfg.crack_thin_share
    if cfg.crack_max_straight_mm > 0:  # a long straight dark line is drawn (an outline), cracks wander
        ys, xs = np.nonzero(labels)
        fl, xs, ys = labels[ys, xs], xs.astype(np.float64), ys.astype(np.float64)
        c = np.maximum(cnt, 1)
        mx, my = np.bincount(fl, xs, n + 1) / c, np.bincount(fl, ys, n + 1) / c
        sxx = np.bincount(fl, xs * xs, n + 1) / c - mx ** 2
        syy = np.bincount(fl, ys * ys, n + 1) / c - my ** 2
        sxy = np.bincount(fl, xs * ys, n + 1) / c - mx * my
        tr, det = sxx + syy, sxx * syy - sxy ** 2
        disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0))
        lmax, lmin = tr / 2 + disc, np.maximum(tr / 2 - disc, 0)
        length_px = np.sqrt(12 * lmax)  # a segment of length l has variance l^2 / 12 along it
        straight = (np.sqrt(lmin) <= 1.0) & (length_px * mm_per_px >= cfg.crack_max_straight_mm)
        keep &= ~straight
    keep[0] = False
    return keep[labels], {"components": int(n), "kept": int(keep.sum())}


def detect_damage(img: np.ndarray, dpi: "float | Scale", cfg: DetectConfig = DetectConfig(),
                  progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Detect damage classes on an sRGB scan.

    Args:
        img: (H, W, 3) float32 numpy in [0, 1].
        dpi: pixels per inch of the scan (a number, checked, or a :class:`~restoration.scale.Scale`).
    Returns dict: ``classes`` (H, W) uint8 with ids of ``CLASS_IDS`` (0 = none); ``responses``
    {crack_dark, light, ground_de, split}: (H, W) uint8 in units of 1/RESP_SCALE (L* or dE00,
    ground_de inverted: 255 = equal to the nearest ground, 0 everywhere when there is none);
    ``confidence`` (H, W) uint8 (255 = 1; losses from :func:`loss_confidence`, other detected classes
    255, 0 where nothing is detected); ``evidence`` (H, W) uint8 bits of :data:`EVIDENCE`;
    ``ground_rgb`` (the best ground, or None when no candidate was found); ``params`` (the config, the
    grounds with their support, component counts).
    """
    import cv2
    from scipy import ndimage
    cfg.validate()
    scale = Scale.of(dpi)
    dpi = scale.dpi
    h, w, _ = img.shape
    if cfg.ground_rgb is not None:
        grounds = user_ground(img, dpi, cfg)
        found: list = grounds
    else:
        found = candidate_grounds(img, dpi, cfg)
        # the best-supported mode seeds; the others are reported (params["ground_candidates"]): a second
        # mode is as often a flat passage of paint (brick faces, a dark sky) as a second ground, and its
        # losses would merge with the first ground's. Give ground_color for another ground. But when the first
        # is not confirmed by its candidates (too few of them, or a colour no ground has: blue paint on a small
        # picture), the other plausible candidates seed too, each checked against what it explains
        # (:func:`_several_grounds`)
        grounds = found[:1] + _other_grounds(found, cfg)
    den = denoise(img)
    ground_labs = [torch.tensor(g["lab"], dtype=torch.float32) for g in grounds]
    auto_seed = min(cfg.auto_seed_de, cfg.ground_seed_de)
    cr = sorted({scale.whole_px(r, 1) for r in cfg.crack_radii_mm})
    lr = sorted({scale.whole_px(r, 1) for r in cfg.light_radii_mm})
    sr = scale.whole_px(cfg.split_radius_mm, 2)
    overlap = 2 * max(cr + lr + [sr]) + 2
    overlap = max(overlap, cfg.loss_grow_px + 2)
    masks = {k: np.zeros((h, w), bool) for k in ("crack_lo", "crack_hi", "light_lo", "light_hi", "split")}
    if cfg.crack_thin_share > 0:
        masks["thin"] = np.zeros((h, w), bool)
    seeds = [np.zeros((h, w), bool) for _ in grounds]   # per ground: a loss belongs to one ground colour
    grows: list = [np.zeros((h, w), bool) for _ in grounds]
    des: list = [np.zeros((h, w), np.uint8) for _ in grounds]   # per ground: dE00 of the denoised scan to it (1/RESP_SCALE)
    grad_max = np.zeros((h, w), np.uint8)  # 3 x 3 max of the Lab gradient, 1/RESP_SCALE units
    step_max = np.zeros((h, w), np.uint8)  # 3 x 3 max of the Lab step between neighbours (a broken edge)
    grain = np.zeros((h, w), np.uint8)     # local per-pixel texture: rms over 5 x 5 of L* minus the denoised L*
    disk_grow = _disk(max(1, cfg.loss_grow_px))
    resp = {k: np.zeros((h, w), np.uint8) for k in ("crack_dark", "light", "ground_de", "split")}
    boxes = list(tile_boxes(h, w, cfg.tile, overlap))
    for i, (y0, y1, x0, x1, py0, py1, px0, px1) in enumerate(boxes):
        lab_raw = lab_of(img[py0:py1, px0:px1])
        lab = lab_of(den[py0:py1, px0:px1])   # the loss path reads the denoised scan
        L = np.ascontiguousarray(lab_raw[..., 0])
        lab_raw_t = torch.from_numpy(lab_raw)
        sl = (slice(y0 - py0, y1 - py0), slice(x0 - px0, x1 - px0))
        out = (slice(y0, y1), slice(x0, x1))
        bhs = [cv2.morphologyEx(L, cv2.MORPH_BLACKHAT, _disk(r)) for r in cr]
        thin = bhs[0] >= cfg.crack_low  # thin dark lines (cracks) never seed a loss
        bhp = np.max(bhs, 0)
        if "thin" in masks:
            masks["thin"][out] = thin[sl]
        del bhs
        thp = np.max([cv2.morphologyEx(L, cv2.MORPH_TOPHAT, _disk(r)) for r in lr], 0)
        # crack seeds must be dark relative to the local paint's own texture (hair, fur, grass, brush
        # strokes are dark lines between light ones: their neighbourhood has a strong top-hat too)
        k = 2 * max(cr) + 1
        tex = cv2.boxFilter(thp, -1, (k, k), borderType=cv2.BORDER_REFLECT)[sl]
        tex_dark = cv2.boxFilter(bhp, -1, (k, k), borderType=cv2.BORDER_REFLECT)[sl]  # the same for light defects
        bh, th = bhp[sl], thp[sl]
        del bhp, thp
        sp = cv2.morphologyEx(L, cv2.MORPH_BLACKHAT, _disk(sr))[sl]
        if ground_labs:
            lab_t = torch.from_numpy(lab)
            de: Any = None
            for j, gl in enumerate(ground_labs):
                dj = ciede2000(lab_t, gl).numpy()
                seed = (dj < grounds[j].get("seed_de", auto_seed)) & ~thin
                # a loss grows by colour only a few px from its seed: no flooding into similar paint (on the
                # scan itself: its corners and rim, which the median rounds off)
                dr = ciede2000(lab_raw_t, gl).numpy()
                grow = (np.minimum(dj, dr) < cfg.ground_grow_de) & (cv2.dilate(seed.view(np.uint8), disk_grow) > 0)
                seeds[j][out] = seed[sl]
                des[j][out] = np.clip(dj[sl] * RESP_SCALE, 0, 255)
                grows[j][out] = grow[sl]
                de = dj if de is None else np.minimum(de, dj)
            de = de[sl]
        else:
            de = np.full((y1 - y0, x1 - x0), 255.0 / RESP_SCALE, np.float32)
        grad_max[out] = np.clip(cv2.dilate(lab_grad(lab), np.ones((3, 3), np.uint8))[sl] * RESP_SCALE, 0, 255)
        dl = np.ascontiguousarray(lab_raw[..., 0] - lab[..., 0])
        grain[out] = np.clip(np.sqrt(cv2.boxFilter(dl * dl, -1, (5, 5), borderType=cv2.BORDER_REFLECT))[sl] * RESP_SCALE, 0, 255)
        del dl
        step_max[out] = np.clip(cv2.dilate(lab_step(lab), np.ones((3, 3), np.uint8))[sl] * RESP_SCALE, 0, 255)
        masks["crack_lo"][out] = (bh >= cfg.crack_low) & (bh >= cfg.crack_texture_low * (1 + tex))
        masks["crack_hi"][out] = (bh >= cfg.crack_high) & (bh >= cfg.crack_texture_ratio * (1 + tex))
        masks["light_lo"][out] = (th >= cfg.light_low) & (th >= cfg.light_texture_low * (1 + tex_dark))
        masks["light_hi"][out] = (th >= cfg.light_high) & (th >= cfg.light_texture_ratio * (1 + tex_dark))
        masks["split"][out] = sp >= cfg.split_low
        resp["crack_dark"][out] = np.clip(bh * RESP_SCALE, 0, 255)
        resp["light"][out] = np.clip(th * RESP_SCALE, 0, 255)
        resp["split"][out] = np.clip(sp * RESP_SCALE, 0, 255)
        resp["ground_de"][out] = np.clip(255 - de * RESP_SCALE, 0, 255)
        if progress:
            progress(i + 1, len(boxes))
    st = np.ones((3, 3), bool)
    # losses: seeds of a ground colour (estimated from loss candidates only) grown a few px by colour,
    # then each component must show the signature of missing paint against its own surroundings
    confidence = np.zeros((h, w), np.uint8)
    evidence = np.zeros((h, w), np.uint8)
    loss = np.zeros((h, w), bool)
    loss_stats = {"candidates": 0, "kept": 0}
    results: list = []   # per ground: (index, labels, kept, confidence, bits, features, doubtful)
    for j in range(len(grounds)):
        seed = seeds[j]
        lab_l = split_necks(_hysteresis(grows[j], seed), cfg.neck_px, cfg.neck_rim_px)   # a loss is never merged with a thin line
        n_l = int(lab_l.max())
        # a ground the user gives seeds within its tolerance (the losses are found, and judged whole), but a loss's
        # own colour is the one an estimated ground's seeds reach (auto_seed): a loss's pixels that its seeds within
        # that reach, grown as a loss grows, do not hold are paint near the ground's colour, never part of its region
        core = None
        if n_l and grounds[j].get("source") == "given" and grounds[j].get("seed_de", auto_seed) > auto_seed:
            c_seed = seed & (des[j] < auto_seed * RESP_SCALE)
            core = _hysteresis(grows[j] & (cv2.dilate(c_seed.view(np.uint8), disk_grow) > 0), c_seed)
            del c_seed
        grows[j] = None
        if n_l == 0:
            continue
        interior = interior_of(lab_l)   # one for the features and both splits (the same labels)
        f = component_features(den, lab_l, grad_max, cfg, cfg.tile, core=seed, exclude=masks["crack_lo"], raw=img,
                               interior=interior)
        keep = loss_signature(f, h * w, cfg)
        # a loss is never merged with flat paint of a colour near the ground's (a highlight wider than a neck):
        # parts off the colour the losses share are cut off and tested on their own
        # ... nor with smooth paint of such a colour where its losses share a grain (a smooth light line merged with a
        # loss of a grainy gesso): parts without that grain are cut off too
        smooth, grain_l = smooth_off(lab_l, grain, keep, cfg, interior)
        lab_s, cut = split_unlike(lab_l, des[j], keep, cfg, smooth, interior)
        del interior
        cut["grain_L"] = grain_l
        grounds[j]["split"] = cut
        doubtful = None
        if cut["cut"]:
            was = keep[lab_l]   # pixels of the losses that had the signature before the cut
            lab_old = lab_l
            lab_l = lab_s
            n_l = int(lab_l.max())
            f = component_features(den, lab_l, grad_max, cfg, cfg.tile, core=seed, exclude=masks["crack_lo"], raw=img,
                                   interior=interior_of(lab_l))
            keep = loss_signature(f, h * w, cfg)
            # a piece of such a loss without the signature on its own (the ground's own texture cut off, or paint
            # that blends into the paint around it) is ambiguous: it stays a loss, listed for review, never filled
            had = np.bincount(lab_l.ravel(), was.ravel(), minlength=n_l + 1) > 0
            doubtful = had & ~keep
            if smooth is not None:
                # a piece cut for lacking the losses' grain is unlike them by that alone: review, with or without the
                # signature on its own (the share of its pixels the smooth mask holds: its rim is the rest)
                cnt = np.bincount(lab_l.ravel(), minlength=n_l + 1)
                sm = np.bincount(lab_l.ravel(), smooth.ravel(), minlength=n_l + 1)
                part = had & (sm >= cfg.smooth_part_share * np.maximum(cnt, 1))
                part[0] = False
                doubtful |= part
                cut["smooth_parts"] = int(part.sum())
                # ... and what is left of a loss such a piece was cut from was merged with smooth paint: one doubt
                # (a grainy gesso's body keeps the losses' texture; the rest of a painted stroke does not: two)
                if part.any():
                    owners = np.unique(lab_old[part[lab_l]])
                    rest = np.zeros(n_l + 1, bool)
                    rest[np.unique(lab_l[np.isin(lab_old, owners[owners > 0])])] = True
                    rest &= ~part
                    rest[0] = False
                    f["merged_smooth"] = rest
                del cnt, sm, part
            doubtful[0] = False
            cut["doubtful"] = int(doubtful.sum())
            del was, lab_old
        des[j] = None
        c_lab = np.sqrt(((f["lab"] - f["ring_lab"]) ** 2).sum(1))   # the step a break makes (Lab distance)
        f["sharp_frac"] = edge_share(lab_l, step_max, cfg.loss_sharp_rel * c_lab * RESP_SCALE, cfg.tile)
        # the texture the losses of this picture share (area-weighted median of their per-pixel noise):
        # a component whose texture is far from it is unlike the others (agreement among the losses)
        tex = keep & np.isfinite(f["noise_L"])
        grounds[j]["noise_ref_L"] = _weighted_median(f["noise_L"][tex], f["n"][tex])
        grounds[j]["flat_ref_L"] = _weighted_median(f["std_L"][keep], f["n"][keep])
        # ... and the colour they share: a loss matches its ground within a tolerance set by how closely
        # the picture's losses (most of their area) match it, not by colour closeness alone
        d_g = ciede2000(torch.from_numpy(f["lab"]), torch.tensor(grounds[j]["lab"], dtype=torch.float64)).numpy()
        ref_de = _weighted_median(d_g[keep], f["n"][keep])
        if ref_de is not None:
            # (a given ground's tolerance says how far a loss may seed from it; a loss filled by default matches
            # it no more loosely than losses match an estimated ground: beyond, its colour is off, review)
            cap = min(grounds[j].get("match_de", cfg.loss_match_de), cfg.loss_match_de)
            grounds[j]["match_ref_de"] = ref_de
            grounds[j]["match_de"] = round(min(cap, max(cfg.loss_match_min_de, cfg.loss_match_ref * ref_de)), 3)
        conf, bits = loss_confidence(f, grounds[j:j + 1], cfg)
        # a ground that few candidates voted for is checked against what it finds: when at least
        # ground_confirm_losses of its losses match it within its tolerance and show nothing unlike the ground
        # (agreement among the losses, not colour closeness alone), and its few candidates agree closely (spread
        # within ground_tight_de: a mode of paint patches is loose), it is confirmed by them; half as many suffice when
        # its candidates and its losses share a measurable grain (grain_shared: one exposed material, evidence that
        # flat paint lacks; a small picture shows few losses)
        g = grounds[j]
        if ref_de is not None:
            like = keep & ((bits & (EVIDENCE["colour_off"] | EVIDENCE["unlike_ground"] | EVIDENCE["mixed_ring"])) == 0)
            g["losses_agree"] = int(like.sum())
        # (a candidate beside the first is checked so only with a grain its candidates and its losses share, and only when
        # the first has a colour no ground has (then it must agree within ground_loose_de too, _grain_agrees), or is
        # confirmed neither by its candidates nor by its losses and shows no grain shared with them: then its losses
        # vouch for the candidate or nothing does)
        if 0 <= g.get("support", 0) < cfg.ground_min_regions \
                and (g.get("role") != "other" or (grounds[0].get("plausible", True) is not True and _grain_agrees(g, cfg))
                     or (not ground_confirmed(grounds[0], cfg) and grain_shared(grounds[0], cfg) is not True
                         and grain_shared(g, cfg) is True)) \
                and g.get("plausible", True) is True and ref_de is not None:
            need = -(-cfg.ground_confirm_losses // 2) if grain_shared(g, cfg) is True else cfg.ground_confirm_losses
            if g["losses_agree"] >= need and ref_de <= cfg.ground_tight_de \
                    and g.get("spread_de") is not None and g["spread_de"] <= cfg.ground_tight_de:
                g["confirmed_by"] = "losses"
                conf, bits = loss_confidence(f, grounds[j:j + 1], cfg)
        n_kept = np.bincount(lab_l.ravel(), minlength=n_l + 1)
        grounds[j]["explains_regions"] = int(keep.sum())
        grounds[j]["explains_mm2"] = round(scale.px_area_to_mm2(float(n_kept[keep].sum())), 4)
        grounds[j]["explains_share"] = round(float(n_kept[keep].sum()) / (h * w), 4)
        # an estimated ground whose losses would cover more of the picture than ground_max_share is the picture's
        # own paint (flat brick faces of one colour voted by dozens of candidates), not exposed ground: never
        # confirmed, so every loss it explains goes to review (a ground the user gives is used as given)
        if g.get("source") == "estimated" and grounds[j]["explains_share"] > cfg.ground_max_share:
            g["explains_most"] = True
            conf, bits = loss_confidence(f, grounds[j:j + 1], cfg)
        results.append((j, lab_l, keep, conf, bits, f, doubtful, core))
        loss_stats["candidates"] += int(n_l)
        loss_stats["kept"] += int(keep.sum() + (doubtful.sum() if doubtful is not None else 0))
        del lab_l
    del seeds, grows, des, grain
    ambiguous = _several_grounds(grounds, results, cfg)
    # confirmed grounds first: a component of an unconfirmed ground that touches a loss of a confirmed one is the
    # paint around that loss (a loss exposes one ground), not a loss of its own
    results.sort(key=lambda r: not ground_confirmed(grounds[r[0]], cfg))
    sure: Optional[np.ndarray] = None   # the losses of confirmed grounds (when several seed)
    for j, lab_l, keep, conf, bits, f, doubtful, core in results:
        if j in ambiguous:   # no longer confirmed by its losses: recomputed without it
            conf, bits = loss_confidence(f, grounds[j:j + 1], cfg)
        if doubtful is not None and doubtful.any():
            conf = np.where(doubtful, np.minimum(conf, round(cfg.doubtful_confidence * 255)), conf).astype(np.uint8)
            bits = np.where(doubtful, bits | EVIDENCE["unlike_ground"], bits).astype(np.uint8)
            keep = keep | doubtful
        if len(results) > 1 and not ground_confirmed(grounds[j], cfg) and sure is not None:
            near = cv2.dilate(sure.view(np.uint8), np.ones((3, 3), np.uint8)) > 0
            touch = np.bincount(lab_l[near], minlength=len(keep)) > 0
            touch[0] = False
            grounds[j]["dropped_touching"] = int((keep & touch).sum())
            keep = keep & ~touch
            del near
        m = keep[lab_l]
        if core is not None:   # (a given ground: a loss that holds core pixels is its core; one that holds none stays whole)
            held = np.bincount(lab_l[core], minlength=len(keep)) > 0
            trim = m & ~core & held[lab_l]
            grounds[j]["trimmed_px"] = int(trim.sum())
            m &= ~trim
            del held, trim
        cl = conf[lab_l]
        better = m & (cl > confidence)
        confidence[better] = cl[better]
        evidence[better] = bits[lab_l[better]]
        loss |= m
        if len(results) > 1 and ground_confirmed(grounds[j], cfg):
            sure = m if sure is None else sure | m
        del cl, m
    del results, sure
    # the ground checked against what it finds: a ground that explains almost no region is said to
    ground_check = None
    if grounds and grounds[0].get("explains_regions", 0) < 3:
        g0 = grounds[0]
        ground_check = (f"the ground colour {tuple(round(v, 3) for v in g0['rgb'])} ({g0.get('source')}) explains "
                        f"{g0.get('explains_regions', 0)} region(s): check it, or give the ground's colour")
    most = [g for g in grounds if g.get("explains_most")]
    if most:
        ground_check = ("the estimated ground colour " + ", ".join(
            f"{tuple(round(v, 3) for v in g['rgb'])} would make {g['explains_share']:.0%} of the picture loss"
            for g in most) + f" (more than {cfg.ground_max_share:.0%}): that is the picture's paint, not exposed ground; "
            "its losses are listed for review; give the ground's colour")
    amb = [g for g in grounds if g.get("ambiguous")]
    if len(amb) > 1:
        ground_check = ("several candidate grounds each explain losses that agree with them ("
                        + ", ".join(str(tuple(round(v, 3) for v in g["rgb"])) for g in amb)
                        + "): which is the ground is ambiguous, their losses are listed for review; give the ground's colour")
    crack = _hysteresis(masks.pop("crack_lo"), masks.pop("crack_hi"), cfg.crack_min_px)
    crack, crack_stats = _crack_gate(crack, resp, masks.pop("thin", None), cfg, scale.mm_per_px)
    light = _hysteresis(masks.pop("light_lo"), masks.pop("light_hi"), cfg.light_min_px)
    # a light spot largely ringed by craquelure is an intact paint island between cracks, not a defect.
    # Measured on the 384 x 512 samples (seeds 0-4): the false positives' 2 px ring is 17-21 % crack at
    # the median, true light defects' at most ~15 % (90th pct); dropping spots above 30 % raises the
    # small-defect precision from 0.43-0.62 to 0.53-0.69 at a recall of 0.89-0.94 (was 0.91-0.97)
    lab_t, n_t = ndimage.label(light, structure=st)
    if n_t and cfg.light_max_crack_ring < 1:
        frac = label_ring_fraction(lab_t, crack, 2, cfg.tile)
        keep = frac <= cfg.light_max_crack_ring
        keep[0] = False
        light = keep[lab_t]
    del lab_t
    # support splits: wide dark lines (opening removes thinner ones) spanning > split_min_length_mm
    wide = masks.pop("split")
    ro = max(1, scale.whole_px(cfg.split_min_width_mm) // 2)
    opened = cv2.morphologyEx(wide.view(np.uint8), cv2.MORPH_OPEN, _disk(ro)) > 0
    rb = scale.whole_px(cfg.split_bridge_mm, 1)  # bridge gaps (a loss across the split) for the length test
    lab_s, n_s = ndimage.label(cv2.dilate(opened.view(np.uint8), _disk(rb)) > 0, structure=st)
    split = np.zeros((h, w), bool)
    if n_s:
        objs = ndimage.find_objects(lab_s)
        min_len = scale.mm_to_px(cfg.split_min_length_mm)
        keep = np.zeros(n_s + 1, bool)
        for j, sl in enumerate(objs, 1):
            ext = np.hypot(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start)
            keep[j] = ext >= min_len
        if keep.any():
            split = cv2.dilate((keep[lab_s] & opened).view(np.uint8), _disk(ro + 1)) > 0
            split &= wide | crack
    del lab_s
    classes = np.zeros((h, w), np.uint8)
    classes[crack] = CLASS_IDS["craquelure"]
    classes[light] = CLASS_IDS["small_defect"]
    classes[loss] = CLASS_IDS["loss"]
    classes[split] = CLASS_IDS["support_split"]
    # per-pixel confidence of the other classes (their regions get it in the review): a detected crack,
    # split or small defect passed its own tests; losses keep theirs
    for name, m in (("craquelure", crack & ~loss), ("small_defect", light & ~loss), ("support_split", split)):
        confidence[m] = 255
        evidence[m] = 0
    confidence[classes == 0] = 0
    evidence[classes == 0] = 0
    params = asdict(cfg)
    g0 = grounds[0] if grounds else None
    params.update(ground_rgb=g0["rgb"] if g0 else None, ground_lab=g0["lab"] if g0 else None,
                  grounds=grounds, ground_candidates=found, ground_check=ground_check, loss_components=loss_stats, crack_components=crack_stats,
                  radii_px={"crack": cr, "light": lr, "split": sr}, overlap_px=overlap)
    return {"classes": classes, "responses": resp, "ground_rgb": g0["rgb"] if g0 else None, "params": params,
            "confidence": confidence, "evidence": evidence}


def merge_user_mask(classes: np.ndarray, add: Optional[np.ndarray] = None, remove: Optional[np.ndarray] = None,
                    add_class: str = "user") -> np.ndarray:
    """Merge user-painted masks into a class map (copies).

    add: (H, W) bool/float mask (> 0.5 counts) painted as ``add_class`` where not already damage;
    remove: mask whose pixels are cleared. Sizes must equal the class map.
    """
    out = classes.copy()
    for name, m in (("add", add), ("remove", remove)):
        if m is not None and tuple(m.shape) != tuple(classes.shape):
            raise ValueError(f"user mask '{name}' has size {tuple(m.shape)}; the scan is {tuple(classes.shape)}")
    if add is not None:
        a = np.asarray(add) > 0.5
        out[a & (out == 0)] = CLASS_IDS[add_class]
    if remove is not None:
        out[np.asarray(remove) > 0.5] = 0
    return out


def fill_mask_from_classes(classes: np.ndarray, fill_classes: Sequence[str]) -> np.ndarray:
    """Boolean (H, W) footprint of the classes to fill (names from CLASS_IDS)."""
    bad = [c for c in fill_classes if c not in CLASS_IDS]
    if bad:
        raise ValueError(f"unknown fill classes {bad}; allowed {sorted(CLASS_IDS)}")
    ids = np.zeros(256, bool)
    for c in fill_classes:
        ids[CLASS_IDS[c]] = True
    return ids[classes]
