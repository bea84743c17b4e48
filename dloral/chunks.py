"""Long clips in chunks: which frames a chunk covers, and what it carries across its first boundary.

Chunk ``i`` of a :class:`ChunkPlan` covers the frames ``[i * chunk, (i + 1) * chunk)`` of the clip (the last
one fewer: the plan needs no frame count, so a video whose container only estimates it is cut the same
way). The recurrence of :mod:`.pipeline` pairs every frame with the previous one's LR frame and VAE latent;
a chunk that does not start the clip therefore also reads frame ``start - 1`` and has it prepared and
encoded alone (:func:`~dloral.pipeline.upscale_video` with ``previous``), which is what the one-pass run
carried there. Chunks are a multiple of ``window`` long, so every window of a chunk is the window the
one-pass run forms at the same frames: the batches through CFR, UNet and VAE are the same tensors.

Guarantee (``tests/core/test_dloral_chunks.py``): on a CPU in float32 a chunked run gives the one-pass
frames **bit for bit**, for every chunk size, with posterior sampling too (its noise is seeded by the frame's
clip index). The one place that could differ is the carried frame's encode: alone here, inside its window
in one pass. On a CPU the VAE runs one frame per call either way (:func:`~dloral.pipeline.vae_frames`); on a
GPU the window is one VAE call, so the carried latent may differ in its last bits there (not measured: no
GPU run yet).

A chunk is processable on its own, given the input and its index (:func:`chunk_input` reads the clip from
its start, or from ``read_from`` when the reader can start there, to ``start - 1`` and drops the frames
before; decoding is cheap next to the model): a Ray worker runs one chunk so (``dloral/batch.py``). A run
over the whole clip uses :func:`stream_chunks`, which reads the clip once. Files, manifests and resuming are
:mod:`.job`'s.
"""
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterable, Iterator, Optional, Tuple

import torch

from .pipeline import DLoRALConfig, DLoRALModels, upscale_video

#: ``stop`` of a chunk that runs to the end of the clip (:meth:`ChunkPlan.last`)
OPEN_END = 1 << 62


class ChunkPastEnd(ValueError):
    """The clip ends before the chunk starts (a frame count that was an estimate): the chunk has no frames."""

__all__ = ["Chunk", "ChunkPlan", "ChunkPastEnd", "chunk_input", "stream_chunks", "upscale_chunk"]


@dataclass(frozen=True)
class Chunk:
    """Frames ``[start, stop)`` of the clip (``stop`` may lie past its end for the last chunk)."""
    index: int
    start: int
    stop: int

    @property
    def read_from(self) -> int:
        """First frame the chunk reads: ``start - 1`` (the carried previous frame), 0 for the first chunk."""
        return max(self.start - 1, 0)

    @property
    def reads(self) -> Tuple[int, int]:
        """The frames ``[read_from, stop)`` the chunk reads of the clip (:func:`chunk_input` takes exactly
        these): all a worker needs of the input (``dloral/batch.py`` sends only these)."""
        return self.read_from, self.stop


@dataclass(frozen=True)
class ChunkPlan:
    """``chunk`` frames per chunk, a multiple of ``window`` (the pipeline's batch) so that windows never
    straddle a boundary. ``labels`` name the two settings in messages."""
    chunk: int
    window: int
    labels: Tuple[str, str] = ("chunk (--chunk)", "window (--window)")

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"{self.labels[1]}: {self.window} must be >= 1")
        if self.chunk < 1 or self.chunk % self.window:
            raise ValueError(f"{self.labels[0]}: {self.chunk} is not a positive multiple of {self.labels[1]} "
                             f"({self.window}); a chunk holds whole windows, so chunked and one-pass runs batch the "
                             f"same frames (e.g. {self.labels[0].split()[0]} {max(1, self.chunk // self.window) * self.window})")

    def __getitem__(self, index: int) -> Chunk:
        if index < 0:
            raise IndexError(f"chunk index {index} < 0")
        return Chunk(index, index * self.chunk, (index + 1) * self.chunk)

    def last(self, index: int) -> Chunk:
        """Chunk ``index`` as the last one of a clip whose frame count is an estimate: it runs to the end of
        the stream, however long (a part longer than ``chunk`` frames is allowed for the last part only)."""
        c = self[index]
        return Chunk(c.index, c.start, OPEN_END)

    def count(self, total: int) -> int:
        """Chunks of a clip of ``total`` frames."""
        return -(-total // self.chunk)

    def chunks(self, total: Optional[int] = None) -> Iterator[Chunk]:
        """The chunks in order; without ``total`` the sequence is open-ended (the stream decides the end)."""
        i = 0
        while total is None or i < self.count(total):
            yield self[i]
            i += 1


def chunk_input(frames: Iterable[torch.Tensor], chunk: Chunk, first: int = 0
                ) -> Tuple[Optional[torch.Tensor], Iterator[torch.Tensor]]:
    """From a stream of the clip's (3, H, W) frames starting at clip index ``first`` (0: the whole clip; at
    most ``chunk.read_from``): ``(previous, frames of the chunk)``, ``previous`` the frame
    ``chunk.start - 1`` (None for the first chunk). The frames before are read and dropped;
    :class:`ChunkPastEnd` when the clip ends before the chunk starts."""
    if not 0 <= first <= chunk.read_from:
        raise ValueError(f"chunk {chunk.index} reads from frame {chunk.read_from}, the stream starts at {first}")
    it = iter(frames)
    skipped = first + sum(1 for _ in islice(it, chunk.read_from - first))
    previous = None
    if chunk.start > 0:
        previous = next(it, None)
        skipped += previous is not None
    if skipped < chunk.read_from + (chunk.start > 0):
        raise ChunkPastEnd(f"chunk {chunk.index} starts at frame {chunk.start} but the input has {skipped} frames")
    return previous, islice(it, chunk.stop - chunk.start)


class _Span:
    """The frames of one chunk from a shared stream, up to ``n``; remembers the last one (the next carry)."""

    def __init__(self, first: torch.Tensor, it: Iterator[torch.Tensor], n: int):
        self.first: Optional[torch.Tensor] = first
        self.last: Optional[torch.Tensor] = None
        self.it, self.left, self.count = it, n, 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.first is not None:
            f, self.first = self.first, None
            self.left -= 1
            self.last, self.count = f, self.count + 1
            yield f
        while self.left > 0:
            g = next(self.it, None)
            if g is None:
                self.left = 0
                return
            self.left -= 1
            self.last, self.count = g, self.count + 1
            yield g

    def drain(self) -> None:
        for _ in self:
            pass


def stream_chunks(frames: Iterable[torch.Tensor], plan: ChunkPlan
                  ) -> Iterator[Tuple[Chunk, Optional[torch.Tensor], Iterable[torch.Tensor]]]:
    """One pass over the clip, chunk by chunk: yields ``(chunk, previous, span)``; ``span`` iterates the
    chunk's frames (read lazily from ``frames``; what the caller does not read is skipped when it asks for
    the next chunk, so a finished chunk is read, not processed). Ends when the stream does."""
    it = iter(frames)
    last = None
    for c in plan.chunks():
        first = next(it, None)
        if first is None:
            return
        span = _Span(first, it, c.stop - c.start)
        yield c, last, span
        span.drain()
        last = span.last


def upscale_chunk(frames: Iterable[torch.Tensor], chunk: Chunk, models: DLoRALModels, cfg: DLoRALConfig,
                  progress: Optional[Callable[[int], None]] = None, previous: Optional[torch.Tensor] = None
                  ) -> Iterator[torch.Tensor]:
    """The chunk's output frames (3, 4H, 4W) in [0, 1]. ``frames``: the chunk's own frames with ``previous``
    (from :func:`stream_chunks`), or, with ``previous`` None, a stream of the whole clip (read through
    :func:`chunk_input`: only the chunk's frames and the one before are used)."""
    if previous is None:
        previous, frames = chunk_input(frames, chunk)
    return upscale_video(frames, models, cfg, progress, previous=previous, first_index=chunk.start)
