"""Overlapping tiles with linear-ramp blending, for latent (CFR + UNet) and VAE tiling.

A tile's weight ramps linearly from 1/(overlap+1) to 1 over ``overlap`` pixels on each side that
faces a neighbouring tile, and is 1 on image borders; the blended result divides by the summed
weights, so where tiles agree the blend is exact.
"""
import torch

__all__ = ["tile_starts", "tiles", "ramp_weight", "tiled_decode", "tiled_encode"]


def tile_starts(size, tile, overlap):
    """Start offsets of tiles of length ``min(tile, size)`` covering ``[0, size)`` with at least ``overlap``."""
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


def tiles(h, w, tile, overlap):
    """List of (y0, y1, x0, x1) covering an h×w grid."""
    th, tw = min(tile, h), min(tile, w)
    return [(y, y + th, x, x + tw) for y in tile_starts(h, tile, overlap) for x in tile_starts(w, tile, overlap)]


def _ramp(n, lo_inner, hi_inner, overlap, device, dtype):
    r = torch.ones(n, device=device, dtype=dtype)
    if overlap > 0:
        ramp = torch.arange(1, n + 1, device=device, dtype=dtype) / (overlap + 1)
        if lo_inner:
            r = torch.minimum(r, ramp)
        if hi_inner:
            r = torch.minimum(r, ramp.flip(0))
    return r


def ramp_weight(box, h, w, overlap, scale=1, device=None, dtype=torch.float32):
    """Blend weight (1, 1, (y1-y0)*scale, (x1-x0)*scale) for a tile box of an h×w grid."""
    y0, y1, x0, x1 = box
    ry = _ramp((y1 - y0) * scale, y0 > 0, y1 < h, overlap * scale, device, dtype)
    rx = _ramp((x1 - x0) * scale, x0 > 0, x1 < w, overlap * scale, device, dtype)
    return (ry[:, None] * rx[None, :])[None, None]


def tiled_decode(decode, z, tile=64, overlap=16, scale=8):
    """Decode latents (B, C, h, w) tile by tile; ``decode`` maps (B, C, th, tw) -> (B, 3, th*scale, tw*scale)."""
    b, _, h, w = z.shape
    boxes = tiles(h, w, tile, overlap)
    if len(boxes) == 1:
        return decode(z)
    out = acc = None
    for box in boxes:
        y0, y1, x0, x1 = box
        img = decode(z[:, :, y0:y1, x0:x1]).float()
        if out is None:
            out = img.new_zeros(b, img.shape[1], h * scale, w * scale)
            acc = img.new_zeros(1, 1, h * scale, w * scale)
        wt = ramp_weight(box, h, w, overlap, scale, img.device)
        out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] += img * wt
        acc[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] += wt
    return out / acc


def tiled_encode(encode, x, tile=512, overlap=64, scale=8):
    """Encode images (B, 3, H, W) (H, W multiples of ``scale``) tile by tile; tile/overlap in pixels.

    ``encode`` returns a latent (B, C, H/scale, W/scale) or a tuple of such (e.g. mean, logvar).
    """
    if tile % scale or overlap % scale:
        raise ValueError(f"VAE encode tile ({tile}) and overlap ({overlap}) must be multiples of {scale}")
    b, _, hh, ww = x.shape
    h, w = hh // scale, ww // scale
    boxes = tiles(h, w, tile // scale, overlap // scale)
    if len(boxes) == 1:
        return encode(x)
    outs = acc = None
    single = False
    for box in boxes:
        y0, y1, x0, x1 = box
        r = encode(x[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale])
        if not isinstance(r, tuple):
            r, single = (r,), True
        if outs is None:
            outs = [t.new_zeros(b, t.shape[1], h, w, dtype=torch.float32) for t in r]
            acc = r[0].new_zeros(1, 1, h, w, dtype=torch.float32)
        wt = ramp_weight(box, h, w, overlap // scale, 1, r[0].device)
        for o, t in zip(outs, r):
            o[:, :, y0:y1, x0:x1] += t.float() * wt
        acc[:, :, y0:y1, x0:x1] += wt
    res = tuple(o / acc for o in outs)
    return res[0] if single else res
