"""Tiling helpers: iterate over a large image in tiles with overlap, bounded memory."""

from __future__ import annotations

from typing import Iterator, Tuple


def tile_boxes(h: int, w: int, tile: int, overlap: int) -> Iterator[Tuple[int, int, int, int, int, int, int, int]]:
    """Yield ``(y0, y1, x0, x1, py0, py1, px0, px1)``: the core box and the padded box.

    Core boxes partition the image; padded boxes add ``overlap`` px each side (clipped).
    ``tile <= 0`` means one tile.
    """
    if tile <= 0 or (h <= tile and w <= tile):
        yield 0, h, 0, w, 0, h, 0, w
        return
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            yield (y0, y1, x0, x1, max(0, y0 - overlap), min(h, y1 + overlap),
                   max(0, x0 - overlap), min(w, x1 + overlap))


def n_tiles(h: int, w: int, tile: int) -> int:
    if tile <= 0 or (h <= tile and w <= tile):
        return 1
    return -(-h // tile) * -(-w // tile)
