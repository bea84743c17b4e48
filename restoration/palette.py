"""Colour counting (spec 4.3): exact distinct 8-bit triplets and a ΔE00-merged count."""
import numpy as np
import torch

from .color import ciede2000, rgb_to_lab


def unique_rgb8(rgb8):
    """(N, 3) uint8 -> (unique (K, 3) uint8, counts (K,)) in packed-value order."""
    packed = (rgb8[:, 0].astype(np.int32) << 16) | (rgb8[:, 1].astype(np.int32) << 8) | rgb8[:, 2]
    u, c = np.unique(packed, return_counts=True)
    return np.stack([(u >> 16) & 255, (u >> 8) & 255, u & 255], 1).astype(np.uint8), c


def count_rgb8(rgb8):
    """Number of distinct (R, G, B) triplets among (N, 3) uint8 pixels."""
    return int(len(unique_rgb8(np.asarray(rgb8).reshape(-1, 3))[0]))


def merge_palette(rgb8, q=1.0, batch=2048):
    """Greedy leader clustering of distinct colours at ΔE00 <= q.

    Colours are visited by decreasing pixel count (ties: packed RGB order); each joins the first
    leader (in creation order) within q, else becomes a leader. Deterministic.
    Returns ``(leaders (K, 3) uint8, leader_counts (K,), assign (U,) index per unique colour,
    uniques (U, 3))``.
    """
    u, c = unique_rgb8(np.asarray(rgb8).reshape(-1, 3))
    order = np.lexsort((np.arange(len(c)), -c))
    lab = rgb_to_lab(torch.from_numpy(u[order].astype(np.float64) / 255))
    leaders = torch.zeros((0, 3), dtype=torch.float64)
    lead_idx = []
    assign = np.full(len(u), -1, np.int64)
    for s in range(0, len(order), batch):
        blk = lab[s:s + batch]
        a = np.full(len(blk), -1, np.int64)
        if len(leaders):
            for t in range(0, len(leaders), 4096):
                d = ciede2000(blk[:, None], leaders[None, t:t + 4096]) <= q
                hit = d.any(1).numpy() & (a < 0)
                a[hit] = d.numpy()[hit].argmax(1) + t
        free = np.nonzero(a < 0)[0]
        if len(free):
            dm = (ciede2000(blk[free][:, None], blk[free][None]) <= q).numpy()
            local = np.full(len(free), -1)
            new = []
            for j in range(len(free)):
                if local[j] >= 0:
                    continue
                local[j] = len(new)
                new.append(free[j])
                rest = dm[j] & (local < 0)
                local[rest] = local[j]
            a[free] = len(leaders) + local
            leaders = torch.cat([leaders, blk[np.array(new)]])
            lead_idx += [order[s + k] for k in new]
        assign[order[s:s + batch]] = a
    counts = np.bincount(assign, weights=c, minlength=len(lead_idx)).astype(np.int64)
    return u[np.array(lead_idx, np.int64)] if lead_idx else np.zeros((0, 3), np.uint8), counts, assign, u


def count_de(rgb8, q=1.0):
    """Number of ΔE00-merged colour clusters (see :func:`merge_palette`)."""
    return int(len(merge_palette(rgb8, q)[0]))
