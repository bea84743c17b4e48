"""Procedural training clips and the fixed text vocabulary of the tiny Wan.

Clips: one coloured shape (square, circle, bar, triangle) that moves left, right, up,
down or stays still over 3 frames of 32x32 RGB on a dark grey background; the path is
centred in the frame with a small jitter, so the motion word also fixes where the shape is.
Prompts: words from a small vocabulary, e.g. ``"red square moving right"``; any word may
be left out (the clip's attribute is then random), ``""`` is the empty prompt.
Text embeddings: each word has a fixed 4096-wide vector drawn from ``VOCAB_SEED`` (the
host requires T5 width 4096); a prompt is its word vectors followed by ``<end>``.
"""
from __future__ import annotations

import math
import re

import torch

from . import vae

TEXT_DIM = 4096
VOCAB_SEED = 20251126
FRAMES = 3
SIZE = 32  # pixels; latents are SIZE // 2
BACKGROUND = (0.2, 0.2, 0.2)
SPEED = 4.0  # pixels per frame

COLOURS = {
    "red": (0.90, 0.10, 0.10), "green": (0.10, 0.80, 0.15), "blue": (0.10, 0.25, 0.95),
    "yellow": (0.92, 0.85, 0.10), "cyan": (0.10, 0.80, 0.85), "magenta": (0.85, 0.10, 0.80),
    "white": (0.95, 0.95, 0.95), "orange": (0.95, 0.50, 0.05),
}
SHAPES = ("square", "circle", "bar", "triangle")
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
SPECIAL = ("<end>", "<pad>", "moving")
VOCAB = tuple(COLOURS) + SHAPES + tuple(MOTIONS) + SPECIAL


def vocab_table(seed: int = VOCAB_SEED, dim: int = TEXT_DIM) -> dict:
    """Fixed word embeddings: {word: [dim] float32 tensor}, unit-variance entries."""
    g = torch.Generator().manual_seed(seed)
    tab = torch.randn(len(VOCAB), dim, generator=g)
    return {w: tab[i] for i, w in enumerate(VOCAB)}


_TABLE = None


def _table():
    global _TABLE
    if _TABLE is None:
        _TABLE = vocab_table()
    return _TABLE


def tokenize(prompt: str) -> list:
    """Lower-cased vocabulary words of ``prompt``; raises ValueError on an unknown word."""
    words = [w for w in re.split(r"[^a-z<>]+", prompt.lower()) if w]
    bad = [w for w in words if w not in VOCAB or w in ("<end>", "<pad>")]
    if bad:
        raise ValueError(f"prompt {prompt!r}: unknown words {bad}; allowed: {', '.join(VOCAB[:-3])}, moving")
    return words


def encode_prompt(prompt: str, length: int | None = None) -> torch.Tensor:
    """Prompt -> context [L, 4096] float32: word vectors, then ``<end>``, then ``<pad>`` up to
    ``length`` (default: no padding, L = words + 1)."""
    words = tokenize(prompt) + ["<end>"]
    if length is not None:
        if length < len(words):
            raise ValueError(f"length={length}: prompt {prompt!r} needs at least {len(words)} tokens")
        words += ["<pad>"] * (length - len(words))
    tab = _table()
    return torch.stack([tab[w] for w in words])


def encode_prompts(prompts, length: int | None = None) -> torch.Tensor:
    """List of prompts -> [B, L, 4096], padded with ``<pad>`` to the longest (or ``length``)."""
    n = max(len(tokenize(p)) + 1 for p in prompts)
    return torch.stack([encode_prompt(p, max(n, length or 0)) for p in prompts])


def _sdf(shape: str, dx, dy, s):
    """Signed distance (pixels, negative inside) to ``shape`` of half-size ``s`` centred at 0."""
    if shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) - s
    if shape == "circle":
        return torch.sqrt(dx * dx + dy * dy) - s * 1.1
    if shape == "bar":
        return torch.maximum(dx.abs() - 1.8 * s, dy.abs() - 0.55 * s)
    if shape == "triangle":
        s = s * 1.2
        return torch.maximum(dy - s, (2 * dx.abs() - dy - s) / math.sqrt(5.0))
    raise ValueError(f"shape={shape!r}: allowed {SHAPES}")


def render_clips(attrs: list, frames: int = FRAMES, size: int = SIZE) -> torch.Tensor:
    """Clips for a list of attribute dicts (see ``random_attributes``): RGB
    [B, 3, frames, size, size] in [0, 1]. Each shape's centre starts at (x0, y0) pixels and
    moves ``SPEED`` pixels per frame in its motion direction; edges are anti-aliased."""
    for a in attrs:
        if a["colour"] not in COLOURS or a["shape"] not in SHAPES or a["motion"] not in MOTIONS:
            raise ValueError(f"attributes {a}: colour in {tuple(COLOURS)}, shape in {SHAPES}, "
                             f"motion in {tuple(MOTIONS)}")
    b = len(attrs)
    f = torch.arange(frames, dtype=torch.float32).view(1, frames, 1, 1)
    col = lambda k: torch.tensor([[float(a[k])] for a in attrs]).view(b, 1, 1, 1)
    mv = torch.tensor([MOTIONS[a["motion"]] for a in attrs], dtype=torch.float32)
    cx = col("x0") + mv[:, 0].view(b, 1, 1, 1) * SPEED * f
    cy = col("y0") + mv[:, 1].view(b, 1, 1, 1) * SPEED * f
    half = col("half")
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dx = grid.view(1, 1, 1, size) - cx
    dy = grid.view(1, 1, size, 1) - cy
    sd = torch.stack([_sdf(s, dx, dy, half) for s in SHAPES])  # [S, B, F, H, W]
    idx = torch.tensor([SHAPES.index(a["shape"]) for a in attrs])
    cover = (0.5 - sd[idx, torch.arange(b)]).clamp(0, 1).unsqueeze(1)  # [B, 1, F, H, W]
    fg = torch.tensor([COLOURS[a["colour"]] for a in attrs]).view(b, 3, 1, 1, 1)
    bg = torch.tensor(BACKGROUND).view(1, 3, 1, 1, 1)
    return bg + (fg - bg) * cover


def render_clip(colour: str, shape: str, motion: str, x0: float, y0: float, half: float,
                frames: int = FRAMES, size: int = SIZE) -> torch.Tensor:
    """One clip, RGB [3, frames, size, size] in [0, 1] (see ``render_clips``)."""
    return render_clips([dict(colour=colour, shape=shape, motion=motion, x0=x0, y0=y0, half=half)],
                        frames, size)[0]


def random_attributes(g: torch.Generator) -> dict:
    """Random colour, shape and motion; size 5 +- 0.5 px (half-size) and a start position that
    centres the path in the frame, jittered by up to 1.5 px. The low positional entropy is on
    purpose: a small model trained for minutes then draws crisp shapes."""
    def pick(seq):
        return seq[int(torch.randint(len(seq), (1,), generator=g))]

    colour, shape, motion = pick(tuple(COLOURS)), pick(SHAPES), pick(tuple(MOTIONS))
    r = (torch.rand(3, generator=g) * 2 - 1).tolist()
    mx, my = MOTIONS[motion]
    x0 = SIZE / 2 - mx * SPEED * (FRAMES - 1) / 2 + 1.5 * r[0]
    y0 = SIZE / 2 - my * SPEED * (FRAMES - 1) / 2 + 1.5 * r[1]
    return dict(colour=colour, shape=shape, motion=motion, x0=x0, y0=y0, half=5.0 + 0.5 * r[2])


def prompt_for(attrs: dict, keep_colour=True, keep_shape=True, keep_motion=True) -> str:
    """The prompt text naming the kept attributes, e.g. ``"red square moving right"``."""
    words = []
    if keep_colour:
        words.append(attrs["colour"])
    if keep_shape:
        words.append(attrs["shape"])
    if keep_motion:
        words += ["moving", attrs["motion"]] if attrs["motion"] != "still" else ["still"]
    return " ".join(words)


def training_batch(batch: int, g: torch.Generator, p_drop=(0.3, 0.3, 0.3), p_empty: float = 0.1):
    """Random clips with prompts that drop each attribute with probability ``p_drop``
    (colour, shape, motion) and the whole prompt with ``p_empty``.

    Returns ``(latents [B, 16, 3, 16, 16], context [B, L, 4096], prompts)``.
    """
    attrs, prompts = [], []
    for _ in range(batch):
        a = random_attributes(g)
        attrs.append(a)
        r = torch.rand(4, generator=g).tolist()
        if r[3] < p_empty:
            prompts.append("")
        else:
            prompts.append(prompt_for(a, r[0] >= p_drop[0], r[1] >= p_drop[1], r[2] >= p_drop[2]))
    rgb = vae.from_unit(render_clips(attrs))
    return vae.encode(rgb), encode_prompts(prompts), prompts


def foreground_mask(rgb01: torch.Tensor, thresh: float = 0.25) -> torch.Tensor:
    """[..., 3, F, H, W] in [0, 1] -> bool [..., F, H, W]: pixels farther than ``thresh``
    (RGB Euclidean) from the background."""
    bg = torch.tensor(BACKGROUND, dtype=rgb01.dtype, device=rgb01.device).view(3, 1, 1, 1)
    return (rgb01 - bg).norm(dim=-4) > thresh


def colour_shares(rgb01: torch.Tensor, thresh: float = 0.25) -> dict:
    """Share of foreground pixels nearest to each vocabulary colour (shares sum to 1, or
    all 0 when there is no foreground). ``rgb01``: [3, F, H, W] or [B, 3, F, H, W] in [0, 1]."""
    fg = foreground_mask(rgb01, thresh)
    pix = rgb01.movedim(-4, -1)[fg]  # [N, 3]
    names = list(COLOURS)
    if pix.shape[0] == 0:
        return {n: 0.0 for n in names}
    pal = torch.tensor([COLOURS[n] for n in names], dtype=pix.dtype)
    idx = torch.cdist(pix, pal).argmin(dim=1)
    counts = torch.bincount(idx, minlength=len(names)).double() / pix.shape[0]
    return {n: float(counts[i]) for i, n in enumerate(names)}


def foreground_centroids(rgb01: torch.Tensor, thresh: float = 0.25) -> torch.Tensor:
    """[3, F, H, W] in [0, 1] -> [F, 2] (x, y) pixel centroid of the foreground per frame
    (NaN for an empty frame)."""
    fg = foreground_mask(rgb01, thresh).double()
    h, w = fg.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    n = fg.sum(dim=(-2, -1))
    return torch.stack([(fg * xx).sum(dim=(-2, -1)) / n, (fg * yy).sum(dim=(-2, -1)) / n], dim=-1)
