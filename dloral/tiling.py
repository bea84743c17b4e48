"""Overlapping tiles with linear-ramp blending, for latent (CFR + UNet) and VAE tiling.

A tile's weight ramps linearly from 1/(overlap+1) to 1 over ``overlap`` pixels on each side that
faces a neighbouring tile, and is 1 on image borders; the blended result divides by the summed
weights, so where tiles agree the blend is exact.

``TilingConfig`` is the one place where tiling settings become latent tile sizes: user settings in
pixels of the ×4 frame (``from_settings``) -> latent pixels, the VAE overlap rule and every tiling check.
"""
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Tuple, Union

import torch

Box = Tuple[int, int, int, int]
"""A tile ``(y0, y1, x0, x1)``, end-exclusive."""
Encoded = Union[torch.Tensor, Tuple[torch.Tensor, ...]]
"""What an encoder returns: a latent ``(B, C, h, w)`` or a tuple of such (e.g. mean, logvar)."""

__all__ = ["LATENT_PX", "TilingConfig", "vae_overlap_for", "tile_starts", "tiles", "ramp_weight",
           "tiled_decode", "tiled_encode"]

LATENT_PX = 8   # pixels of the ×4 frame per latent pixel (the SD VAE's downsampling)


def vae_overlap_for(vae_tile: int) -> int:
    """The VAE tile overlap (latent px) used with a VAE tile of ``vae_tile`` latent px: a quarter of the
    tile, at most ``TilingConfig.MAX_VAE_OVERLAP`` (0 when VAE tiling is off)."""
    return min(TilingConfig.MAX_VAE_OVERLAP, max(vae_tile, 0) // 4)


@dataclass(frozen=True)
class TilingConfig:
    """Latent and VAE tiling of a run, all in latent pixels.

    tile / overlap: latent tile (CFR + UNet) and overlap; tile 0 never tiles. A frame whose latent has
      more than tile² positions is tiled (the official rule).
    vae_tile / vae_overlap: VAE decode tile and overlap (encode uses the same ×8 in pixels); 0: off.

    The constructor checks the structural rules (0 <= overlap < tile); ``from_settings`` also the user
    minimums and the pixel multiples.
    """
    tile: int = 96
    overlap: int = 32
    vae_tile: int = 0
    vae_overlap: int = 0

    MIN_TILE = 8            # latent px: the SD2.1 UNet downsamples by 8, a smaller tile has no deepest pixel
    MIN_VAE_TILE = 8        # latent px (64 image px)
    MAX_VAE_OVERLAP = 16    # latent px

    def __post_init__(self) -> None:
        for k in ("tile", "overlap", "vae_tile", "vae_overlap"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"tiling {k} must be a non-negative integer (latent px), got {v!r}")
        if self.tile and self.overlap >= self.tile:
            raise ValueError(f"tiling: the overlap ({self.overlap} latent px) must be smaller than the tile "
                             f"({self.tile} latent px)")
        if self.vae_tile and self.vae_overlap >= self.vae_tile:
            raise ValueError(f"tiling: the VAE overlap ({self.vae_overlap} latent px) must be smaller than the "
                             f"VAE tile ({self.vae_tile} latent px)")

    @classmethod
    def from_settings(cls, tile_size: int, tile_overlap: int, vae_tile: int,
                      names: Optional[Mapping[str, str]] = None) -> "TilingConfig":
        """From the user's settings: ``tile_size`` / ``tile_overlap`` in pixels of the ×4 frame (multiples
        of ``LATENT_PX``; tile 0 = never tile, else at least ``MIN_TILE`` latent px and above the overlap),
        ``vae_tile`` in latent px (0 = off, else at least ``MIN_VAE_TILE``; overlap by ``vae_overlap_for``).

        ``names`` maps the three setting names to the labels used in error messages (e.g. a CLI flag).
        """
        n = {k: k for k in ("tile_size", "tile_overlap", "vae_tile")}
        n.update(names or {})
        for k, v in (("tile_size", tile_size), ("tile_overlap", tile_overlap), ("vae_tile", vae_tile)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{n[k]}: {v!r} is not allowed; use a non-negative integer")
        for k, v in (("tile_size", tile_size), ("tile_overlap", tile_overlap)):
            if v % LATENT_PX:
                raise ValueError(f"{n[k]}: {v} is not a multiple of {LATENT_PX} (pixels of the ×4 frame per "
                                 f"latent pixel); use {v // LATENT_PX * LATENT_PX} or {(v // LATENT_PX + 1) * LATENT_PX}")
        if tile_size:
            lo = cls.MIN_TILE * LATENT_PX
            if tile_size < lo:
                raise ValueError(f"{n['tile_size']}: {tile_size} is below the smallest tile, {lo} px "
                                 f"({cls.MIN_TILE} latent px); use 0 (never tile) or {lo} and more")
            if tile_overlap >= tile_size:
                raise ValueError(f"{n['tile_overlap']}: {tile_overlap} must be smaller than {n['tile_size']} "
                                 f"({tile_size}); use 0..{tile_size - LATENT_PX}")
        if vae_tile and vae_tile < cls.MIN_VAE_TILE:
            raise ValueError(f"{n['vae_tile']}: {vae_tile} is below the smallest VAE tile, {cls.MIN_VAE_TILE} "
                             f"latent px; use 0 (no VAE tiling) or {cls.MIN_VAE_TILE} and more")
        return cls(tile=tile_size // LATENT_PX, overlap=tile_overlap // LATENT_PX if tile_size else 0,
                   vae_tile=vae_tile, vae_overlap=vae_overlap_for(vae_tile))



def tile_starts(size: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of length ``min(tile, size)`` covering ``[0, size)`` with at least ``overlap``."""
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return starts


def tiles(h: int, w: int, tile: int, overlap: int) -> List[Box]:
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


def ramp_weight(box: Box, h: int, w: int, overlap: int, scale: int = 1, device: Union[str, torch.device, None] = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Blend weight (1, 1, (y1-y0)*scale, (x1-x0)*scale) for a tile box of an h×w grid."""
    y0, y1, x0, x1 = box
    ry = _ramp((y1 - y0) * scale, y0 > 0, y1 < h, overlap * scale, device, dtype)
    rx = _ramp((x1 - x0) * scale, x0 > 0, x1 < w, overlap * scale, device, dtype)
    return (ry[:, None] * rx[None, :])[None, None]


def tiled_decode(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, tile: int = 64, overlap: int = 16,
                 scale: int = 8) -> torch.Tensor:
    """Decode latents (B, C, h, w) tile by tile; ``decode`` maps (B, C, th, tw) -> (B, 3, th*scale, tw*scale)."""
    b, _, h, w = z.shape
    boxes = tiles(h, w, tile, overlap)
    if len(boxes) == 1:
        return decode(z)
    out: Optional[torch.Tensor] = None
    acc: Optional[torch.Tensor] = None
    for box in boxes:
        y0, y1, x0, x1 = box
        img = decode(z[:, :, y0:y1, x0:x1]).float()
        if out is None or acc is None:
            out = img.new_zeros(b, img.shape[1], h * scale, w * scale)
            acc = img.new_zeros(1, 1, h * scale, w * scale)
        wt = ramp_weight(box, h, w, overlap, scale, img.device)
        out[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] += img * wt
        acc[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] += wt
    assert out is not None and acc is not None    # boxes is never empty
    return out / acc


def tiled_encode(encode: Callable[[torch.Tensor], Encoded], x: torch.Tensor, tile: int = 512, overlap: int = 64,
                 scale: int = 8) -> Encoded:
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
    outs: Optional[List[torch.Tensor]] = None
    acc = None
    single = False
    for box in boxes:
        y0, y1, x0, x1 = box
        r = encode(x[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale])
        if not isinstance(r, tuple):
            r, single = (r,), True
        if outs is None or acc is None:
            outs = [t.new_zeros(b, t.shape[1], h, w, dtype=torch.float32) for t in r]
            acc = r[0].new_zeros(1, 1, h, w, dtype=torch.float32)
        wt = ramp_weight(box, h, w, overlap // scale, 1, r[0].device)
        for o, t in zip(outs, r):
            o[:, :, y0:y1, x0:x1] += t.float() * wt
        acc[:, :, y0:y1, x0:x1] += wt
    assert outs is not None and acc is not None   # boxes is never empty
    res = tuple(o / acc for o in outs)
    return res[0] if single else res
