"""Colour counting (spec 4.3): exact distinct 8-bit triplets and a ΔE00-merged count."""

from __future__ import annotations

from typing import Tuple
import numpy as np
import torch

from .color import ciede2000, rgb_to_lab


def unique_rgb8(rgb8: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 3) uint8 -> (unique (K, 3) uint8, counts (K,)) in packed-value order."""
    packed = (rgb8[:, 0].astype(np.int32) << 16) | (rgb8[:, 1].astype(np.int32) << 8) | rgb8[:, 2]
    u, c = np.unique(packed, return_counts=True)
    return np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], 1).astype(np.uint8), c


def count_rgb8(rgb8: np.ndarray) -> int:
    """Number of distinct (R, G, B) triplets among (N, 3) uint8 pixels."""
    return int(len(unique_rgb8(np.asarray(rgb8).reshape(-1, 3))[0]))


def merge_palette(rgb8: np.ndarray, q: float = 1.0, search_ab: float = 3.0
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Greedy leader clustering of distinct colours at ΔE00 <= q.

    Colours are visited by decreasing pixel count (ties: packed RGB order); each joins the earliest
    leader within ΔE00 <= q, else becomes a leader. Candidate pairs come from a k-d tree in Lab with
    Euclidean radius ``search_ab * q`` (ΔE*ab); ΔE00 is then computed exactly for those pairs. Pairs
    with ΔE00 <= q but ΔE*ab > search_ab*q (saturated colours, C* above ~60) are not merged, so the
    count is an upper bound there. Deterministic.
    Returns ``(leaders (K, 3) uint8, leader_counts (K,), assign (U,) leader index per unique colour,
    uniques (U, 3))``.
    """
    from scipy.spatial import cKDTree
    u, c = unique_rgb8(np.asarray(rgb8).reshape(-1, 3))
    if len(u) == 0:
        return np.zeros((0, 3), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64), u
    order = np.lexsort((np.arange(len(c)), -c))
    lab = rgb_to_lab(torch.from_numpy(u[order].astype(np.float64) / 255))
    pairs = cKDTree(lab.numpy()).query_pairs(search_ab * q, output_type="ndarray")
    if len(pairs):  # exact ΔE00 on the candidates, in chunks (bounded memory)
        keep = np.zeros(len(pairs), bool)
        for s in range(0, len(pairs), 1 << 20):
            p = torch.from_numpy(pairs[s:s + (1 << 20)])
            keep[s:s + len(p)] = (ciede2000(lab[p[:, 0]], lab[p[:, 1]]) <= q).numpy()
        pairs = pairs[keep]
    # adjacency (CSR) from the later colour to the earlier one (positions in visiting order)
    lo, hi = pairs.min(1) if len(pairs) else np.zeros(0, int), pairs.max(1) if len(pairs) else np.zeros(0, int)
    srt = np.lexsort((lo, hi))
    lo, hi = lo[srt], hi[srt]
    start = np.searchsorted(hi, np.arange(len(u) + 1))
    leader_of = np.full(len(u), -1, np.int64)
    is_leader = np.zeros(len(u), bool)
    lead_pos: list = []
    for i in range(len(u)):
        cand = lo[start[i]:start[i + 1]]
        cand = cand[is_leader[cand]]
        if len(cand):
            leader_of[i] = leader_of[cand.min()]
        else:
            is_leader[i] = True
            leader_of[i] = len(lead_pos)
            lead_pos.append(i)
    assign = np.empty(len(u), np.int64)
    assign[order] = leader_of
    counts = np.bincount(assign, weights=c, minlength=len(lead_pos)).astype(np.int64)
    return u[order[np.array(lead_pos, np.int64)]], counts, assign, u


def count_de(rgb8: np.ndarray, q: float = 1.0) -> int:
    """Number of ΔE00-merged colour clusters (see :func:`merge_palette`)."""
    return int(len(merge_palette(rgb8, q)[0]))
