"""Shared helpers for the restoration tests: a small synthetic sample, cached per process."""
import functools

import numpy as np


@functools.lru_cache(maxsize=4)
def small_sample(seed=0, h=384, w=512):
    from restoration.synth import SynthConfig, make_sample
    img, clean, gt, info = make_sample(SynthConfig(height=h, width=w), seed)
    for a in (img, clean, gt):
        a.setflags(write=False)
    return img, clean, gt, info


def disc_map(n_side=10, r=3, gap=3):
    """A boolean map of n_side x n_side disjoint discs of radius r, >= gap px apart."""
    import cv2
    step = 2 * r + 1 + gap
    m = np.zeros((n_side * step + gap, n_side * step + gap), np.uint8)
    for i in range(n_side):
        for j in range(n_side):
            cv2.circle(m, (gap + r + j * step, gap + r + i * step), r, 1, -1)
    return m > 0
