"""DLoRAL one-step video ×4 upscaling over a stream of frames.

Models are plain callables (see :class:`DLoRALModels`), so the core runs on the host's SD2.1 UNet
and VAE (adapted by the node) or on tiny pure-torch stand-ins (tests).

Per frame t the pair (t-1, t) is processed; frame 0 is paired with itself (previous = current:
the flow is SpyNet's estimate between identical frames and the retrieval attends to the frame's own
latent), so N frames in give N frames out, in order. Each frame is VAE-encoded once; its latent and
upsampled LR frame are carried over as the next pair's "previous". Frames are processed in windows
of ``window`` pairs (one batch through CFR, UNet and VAE decode); only the last frame of a window is
kept, so memory does not grow with the clip length.

Frames go in through :func:`prepare_frames` and out through :func:`finish_frames`, whose
``processing`` setting (one of ``PROCESSINGS``) decides their arithmetic:

- ``"official"`` (default): the official inference script's 8-bit steps, in its order. The frame is
  taken as 8-bit (``round(255 x)``); Pillow's bicubic enlarges it when a side is below
  ``process_size / 4``; Pillow's bicubic resizes it ×4; Pillow's LANCZOS squeezes it to a multiple
  of 8 (each step an 8-bit image, Pillow 9.5's arithmetic, see :mod:`.resample`). The decoded frame
  is cut to 8 bits (``int(255 x)``, as torchvision's ``ToPILImage``), colour-fixed against the 8-bit
  LR frame and cut to 8 bits again; when the frame was enlarged or squeezed, Pillow's bicubic resizes
  the 8-bit result to exactly ×4 of the input (the official script does this only for enlarged
  frames; for a squeezed one it keeps the squeezed size). Outputs are multiples of 1/255.
- ``"float"``: the same kernels in float32 and no 8-bit step: a 16-bit or float input keeps its
  precision and outputs are not quantised. Against ``"official"`` this drops the rounding of every
  resize (up to 2 levels of 255 on the LR frame) and the truncations of the output (the official
  output is half a level darker on average): each of the two steps alone changes values by less than
  3 levels of 255. The model then sees a slightly different LR frame (on random weights, which
  amplify it, decoded frames differ by up to 0.04, 47 dB; README, 'Parity with the official code').

One step (official ``--stages 1``): ``x = [warp(z_prev), fused]`` (8 channels), ``eps = UNet(x, t=1,
context)``, ``z0 = fused − eps``, ``image = decode(z0 / 0.18215)``, then a colour fix against the
upsampled LR frame.
"""
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Tuple

import torch

from .cfr import CFR, cfr_fuse
from .colorfix import COLOR_FIXES, color_fix
from .resample import from_u8, resize_float, resize_u8, to_u8
from .tiling import TilingConfig, ramp_weight, tiles, tiled_decode, tiled_encode, vae_overlap_for

__all__ = ["LATENT_SCALE", "PROCESSINGS", "DLoRALConfig", "DLoRALModels", "prepare_frames", "finish_frames",
           "process_pairs", "upscale_video", "upscale_frames", "upscale_images", "check_images", "check_context", "to_vae_pixels",
           "from_vae_pixels"]

LATENT_SCALE = 0.18215
MIN_SIDE = 8
PROCESSINGS = ("official", "float")


@dataclass(frozen=True)
class DLoRALConfig:
    """Settings of one upscaling run.

    tile / overlap: latent tile size and overlap (latent pixels; ×8 in the image). A frame whose
      latent has more than tile² positions is tiled (the official rule); tile 0 never tiles.
    color_fix: "adain" | "wavelet" | "none".
    window: pairs per batch (memory grows with it, not with the clip length).
    seed: seeds posterior sampling (only used when ``sample_posterior``).
    sample_posterior: sample the VAE posterior (the official code does, unseeded) instead of its mean.
    process_size: frames whose ×4 short side is below this are pre-upscaled to it (official default
      512) and the result resized back to exactly ×4.
    vae_tile / vae_overlap: VAE decode tile and overlap in latent pixels (0: no VAE tiling); encode
      uses the same ×8 in pixels. vae_overlap None: ``tiling.vae_overlap_for(vae_tile)``.
    The tiling fields are checked by ``tiling.TilingConfig``; user settings in pixels become this config
    through ``settings.UpscaleSettings(...).config()`` (node and CLI).
    attn_chunk: retrieval-attention queries per block ("auto": about 256 MiB per block; None: dense).
    processing: "official" (the official script's 8-bit frame preparation and finishing, default) or
      "float" (the same kernels in float32, no 8-bit step); see the module docstring.
    """
    tile: int = 96
    overlap: int = 32
    color_fix: str = "adain"
    window: int = 4
    seed: int = 0
    sample_posterior: bool = False
    process_size: int = 512
    vae_tile: int = 0
    vae_overlap: Optional[int] = None
    attn_chunk: object = "auto"
    processing: str = "official"

    def __post_init__(self) -> None:
        vae_overlap = vae_overlap_for(self.vae_tile) if self.vae_overlap is None else self.vae_overlap
        object.__setattr__(self, "vae_overlap", vae_overlap)
        TilingConfig(self.tile, self.overlap, self.vae_tile, vae_overlap)   # the tiling rules, one place
        if self.processing not in PROCESSINGS:
            raise ValueError(f"processing must be one of {PROCESSINGS}, got {self.processing!r}")
        if self.color_fix not in COLOR_FIXES:
            raise ValueError(f"color_fix must be one of {COLOR_FIXES}, got {self.color_fix!r}")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.process_size < 64 or self.process_size % 8:
            raise ValueError(f"process_size must be a multiple of 8 and >= 64, got {self.process_size}")


@dataclass
class DLoRALModels:
    """The callables a run needs.

    unet(x, t, context): x (B, 8, h, w) in ``dtype``, t (B,) timesteps (all 1), context (B, L, D) ->
      eps (B, 4, h, w); the 8-channel conv_in and the DLoRAL LoRAs must already be applied.
    encode(img): (B, 3, H, W) in [-1, 1] -> unscaled latent mean (B, 4, H/8, W/8), or a tuple
      (mean, logvar) when posterior sampling is wanted.
    decode(z): unscaled latent (B, 4, h, w) -> (B, 3, 8h, 8w) in [-1, 1].
    cfr: the CFR module (``CFR.from_weights``); context: (1, L, D) prompt embedding.
    """
    unet: Callable
    encode: Callable
    decode: Callable
    cfr: CFR
    context: torch.Tensor
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32


def check_context(ctx: object) -> torch.Tensor:
    """The prompt embedding ``(1, L, 1024)`` (SD2.x text encoder), or ValueError naming the ``positive`` input
    (not a tensor, or another width)."""
    if not torch.is_tensor(ctx):
        raise ValueError("positive: expected a CONDITIONING from an SD2.x text encoder")
    if ctx.shape[-1] != 1024:
        raise ValueError(f"positive conditioning has width {ctx.shape[-1]}; DLoRAL needs the SD2.x "
                         "text encoder (width 1024)")
    return ctx


def to_vae_pixels(x: torch.Tensor) -> torch.Tensor:
    """Frames as :class:`DLoRALModels` encodes them, ``(B, 3, H, W)`` in [-1, 1], -> channels-last
    ``(B, H, W, 3)`` float32 in [0, 1] (clamped), the layout of an image VAE that takes [0, 1] pixels."""
    return ((x.float() + 1) / 2).clamp(0, 1).movedim(1, -1)


def from_vae_pixels(img: torch.Tensor) -> torch.Tensor:
    """A channels-last decode in [0, 1], ``(..., H, W, 3)`` (leading dims flattened into the batch), ->
    ``(B, 3, H, W)`` float32 in [-1, 1], as :class:`DLoRALModels` ``decode`` returns it."""
    return img.reshape(-1, *img.shape[-3:]).movedim(-1, 1).float() * 2 - 1


def _check_processing(processing):
    if processing not in PROCESSINGS:
        raise ValueError(f"processing must be one of {PROCESSINGS}, got {processing!r}")


def prepare_frames(frames: torch.Tensor, process_size: int = 512,
                   processing: str = "official") -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(B, 3, H, W) in [0, 1] -> ``(lr, (4H, 4W))``: the ×4-upsampled frames (B, 3, H', W') float32 in
    [0, 1], H' and W' multiples of 8, and the size the output is brought back to.

    As the official script: when a side is below ``process_size // 4`` the frame is first enlarged by
    ``s = (process_size // 4) / min(H, W)`` to ``(int(s H), int(s W))`` (bicubic); then bicubic ×4; then
    LANCZOS down to the multiples of 8 below. ``processing="official"`` does this on 8-bit images
    (Pillow 9.5's arithmetic; ``lr`` holds multiples of 1/255), ``"float"`` with the same kernels in float.
    """
    _check_processing(processing)
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (B, 3, H, W), got {tuple(frames.shape)}")
    h, w = frames.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"frames are {h}x{w}; DLoRAL needs at least {MIN_SIDE}x{MIN_SIDE} input pixels")
    official = processing == "official"
    x = to_u8(frames, "round") if official else frames.float().clamp(0, 1)
    resize = resize_u8 if official else resize_float
    short = process_size // 4
    if min(h, w) < short:
        s = short / min(h, w)
        x = resize(x, (int(s * h), int(s * w)), "bicubic")
    x = resize(x, (x.shape[-2] * 4, x.shape[-1] * 4), "bicubic")
    x = resize(x, (x.shape[-2] // 8 * 8, x.shape[-1] // 8 * 8), "lanczos")
    return (from_u8(x) if official else x), (4 * h, 4 * w)


def finish_frames(decoded: torch.Tensor, lr: torch.Tensor, out_size: Tuple[int, int], color_fix_method: str = "adain",
                  processing: str = "official") -> torch.Tensor:
    """Decoded frames (B, 3, H', W') in [-1, 1] (clamped here) -> (B, 3, out_size) float32 in [0, 1].

    ``lr``: the frames from :func:`prepare_frames` (colour reference, same size as ``decoded``).
    ``"official"``: ``int(255 (x / 2 + 1 / 2))`` to 8 bits, colour fix against ``lr``, ``int(255 x)``
    again, Pillow's 8-bit bicubic to ``out_size`` when the size differs; the result holds multiples of
    1/255. ``"float"``: the same without the 8-bit steps (float bicubic with Pillow's kernel).
    """
    _check_processing(processing)
    img = decoded.float().clamp(-1, 1) * 0.5 + 0.5
    size = (int(out_size[0]), int(out_size[1]))
    if processing == "float":
        img = color_fix(img, lr.float(), color_fix_method)
        if tuple(img.shape[-2:]) != size:
            img = resize_float(img, size, "bicubic")
        return img.clamp(0, 1)
    u8 = to_u8(img, "trunc")
    if color_fix_method != "none":
        u8 = to_u8(color_fix(from_u8(u8), lr.float(), color_fix_method), "trunc")
    if tuple(u8.shape[-2:]) != size:
        u8 = resize_u8(u8, size, "bicubic")
    return from_u8(u8)


def _pair_step(models, lr_prev, lr_cur, z_prev, z_cur, chunk):
    warped, fused = cfr_fuse(models.cfr, lr_prev, lr_cur, z_prev, z_cur, chunk=chunk)
    b = z_cur.shape[0]
    t = torch.ones(b, device=z_cur.device, dtype=models.dtype)
    ctx = models.context.to(z_cur.device, models.dtype).expand(b, -1, -1)
    eps = models.unet(torch.cat((warped, fused), 1).to(models.dtype), t, ctx)
    return fused.float(), eps.float()


def process_pairs(models: DLoRALModels, lr_prev: torch.Tensor, lr_cur: torch.Tensor, z_prev: torch.Tensor, z_cur: torch.Tensor,
                  cfg: DLoRALConfig) -> torch.Tensor:
    """z0 (B, 4, h, w) for a batch of pairs; tiled over the latent when it exceeds ``cfg.tile``².

    lr_*: (B, 3, 8h, 8w) in [-1, 1]; z_*: (B, 4, h, w) scaled latents.
    Tiles run CFR and UNet on their crop; the fused latents and eps are blended with ramp weights.
    """
    h, w = z_cur.shape[-2:]
    if not cfg.tile or h * w <= cfg.tile * cfg.tile:
        fused, eps = _pair_step(models, lr_prev, lr_cur, z_prev, z_cur, cfg.attn_chunk)
        return fused - eps
    acc_f = torch.zeros(z_cur.shape, device=z_cur.device)
    acc_e = torch.zeros_like(acc_f)
    acc_w = torch.zeros(1, 1, h, w, device=z_cur.device)
    for box in tiles(h, w, cfg.tile, cfg.overlap):
        y0, y1, x0, x1 = box
        px = (slice(None), slice(None), slice(8 * y0, 8 * y1), slice(8 * x0, 8 * x1))
        lt = (slice(None), slice(None), slice(y0, y1), slice(x0, x1))
        fused, eps = _pair_step(models, lr_prev[px], lr_cur[px], z_prev[lt], z_cur[lt], cfg.attn_chunk)
        wt = ramp_weight(box, h, w, cfg.overlap, 1, z_cur.device)
        acc_f[lt] += fused * wt
        acc_e[lt] += eps * wt
        acc_w[lt] += wt
    return (acc_f - acc_e) / acc_w


def vae_frames(device: torch.device, n: int) -> int:
    """Frames per VAE call in a window of ``n``: one on a CPU, where batching gains nothing (full SD VAE, fp32,
    2 threads: 12.6 s per 512x512 encode and 26.2 s per decode at batch 1 and 4 alike) and multiplies the
    activations held (about 0.5 GB per 512x512 frame); the whole window on a GPU (the host's VAE splits a
    batch by free memory itself)."""
    return 1 if torch.device(device).type == "cpu" else max(1, n)


def _per_frames(fn, x, step):
    """``fn`` over ``x`` (B, ...) in chunks of ``step`` along B; outputs (a tensor or a tuple) concatenated."""
    if x.shape[0] <= step:
        return fn(x)
    parts = [fn(x[i:i + step]) for i in range(0, x.shape[0], step)]
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p, 0) for p in zip(*parts))
    return torch.cat(parts, 0)


def _encode(models, lr, cfg, first_index):
    x = (lr * 2 - 1).to(models.device, models.dtype)
    enc = models.encode
    one = (lambda c: tiled_encode(enc, c, cfg.vae_tile * 8, cfg.vae_overlap * 8)) if cfg.vae_tile else enc
    r = _per_frames(one, x, vae_frames(models.device, x.shape[0]))
    if isinstance(r, tuple):
        mean, logvar = r
        if cfg.sample_posterior:
            noise = torch.stack([torch.randn(mean.shape[1:], generator=torch.Generator().manual_seed(
                (cfg.seed * 1_000_003 + first_index + i) % (2 ** 63))) for i in range(mean.shape[0])])
            mean = mean.float() + torch.exp(0.5 * logvar.float().clamp(-30, 20)) * noise.to(mean.device)
    else:
        if cfg.sample_posterior:
            raise ValueError("sample_posterior needs a VAE encode that returns (mean, logvar)")
        mean = r
    return mean.to(models.dtype) * LATENT_SCALE


def _decode(models, z0, cfg):
    z = (z0 / LATENT_SCALE).to(models.dtype)
    one = (lambda c: tiled_decode(models.decode, c, cfg.vae_tile, cfg.vae_overlap)) if cfg.vae_tile else models.decode
    return _per_frames(lambda c: one(c).float(), z, vae_frames(models.device, z.shape[0]))


@torch.no_grad()
def upscale_video(frames: Iterable[torch.Tensor], models: DLoRALModels, cfg: DLoRALConfig,
                  progress: Optional[Callable[[int], None]] = None, previous: Optional[torch.Tensor] = None,
                  first_index: int = 0) -> Iterator[torch.Tensor]:
    """Upscale a stream of frames ×4; yields one (3, 4H, 4W) frame in [0, 1] (float32, CPU) per input.

    frames: iterable of (3, H, W) tensors in [0, 1], all the same size. Consumed ``cfg.window`` at a
    time; ``progress(i)`` is called after frame i is produced (i counts from ``first_index``).
    previous: the (3, H, W) frame before the first one, for a stream that starts inside a clip (a chunk,
      :mod:`.chunks`): it is prepared and encoded alone, as frame ``first_index - 1``, and carried as the
      first pair's "previous" (None: the first frame is paired with itself). first_index: the clip index
      of the first frame (seeds posterior sampling; windows are counted from it).
    """
    carry, size, index, buf = None, None, first_index, []
    if previous is not None:
        if previous.dim() != 3 or previous.shape[0] != 3:
            raise ValueError(f"previous frame must be (3, H, W), got {tuple(previous.shape)}")
        if first_index < 1:
            raise ValueError(f"a previous frame needs first_index >= 1, got {first_index}")
        size = tuple(previous.shape[-2:])
        lr, _ = prepare_frames(previous[None].to(models.device), cfg.process_size, cfg.processing)
        carry = ((lr * 2 - 1).to(models.dtype), _encode(models, lr, cfg, first_index - 1))

    def run(batch):
        nonlocal carry, index
        x = torch.stack(batch).to(models.device)
        lr, out_size = prepare_frames(x, cfg.process_size, cfg.processing)
        z = _encode(models, lr, cfg, index)
        lr_pm = (lr * 2 - 1).to(models.dtype)
        prev_lr, prev_z = carry if carry is not None else (lr_pm[:1], z[:1])
        lr_prev = torch.cat((prev_lr, lr_pm[:-1]), 0)
        z_prev = torch.cat((prev_z, z[:-1]), 0)
        z0 = process_pairs(models, lr_prev, lr_pm, z_prev, z, cfg)
        img = finish_frames(_decode(models, z0, cfg), lr, out_size, cfg.color_fix, cfg.processing).cpu()
        carry = (lr_pm[-1:], z[-1:])
        for f in img:
            if progress is not None:
                progress(index)
            index += 1
            yield f

    for i, f in enumerate(frames):
        if f.dim() != 3 or f.shape[0] != 3:
            raise ValueError(f"frame {first_index + i} must be (3, H, W), got {tuple(f.shape)}")
        if size is None:
            size = tuple(f.shape[-2:])
        elif tuple(f.shape[-2:]) != size:
            raise ValueError(f"frame {first_index + i} is {f.shape[-2]}x{f.shape[-1]} but frame "
                             f"{max(first_index - 1, 0)} is {size[0]}x{size[1]}: "
                             "all frames of a video must have the same size")
        buf.append(f)
        if len(buf) == cfg.window:
            yield from run(buf)
            buf = []
    if buf:
        yield from run(buf)


def upscale_frames(frames: torch.Tensor, models: DLoRALModels, cfg: DLoRALConfig,
                   progress: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, 4H, 4W); the output is allocated once and filled per window."""
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (N, 3, H, W), got {tuple(frames.shape)}")
    n, _, h, w = frames.shape
    out = torch.empty(n, 3, 4 * h, 4 * w)
    for i, f in enumerate(upscale_video(iter(frames), models, cfg, progress)):
        out[i] = f
    return out


def check_images(images: torch.Tensor) -> torch.Tensor:
    """``images`` when it is a channels-last batch ``(N, H, W, 3)``, else ValueError naming the input."""
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected an IMAGE batch (N, H, W, 3), got {tuple(images.shape)}")
    return images


def upscale_images(images: torch.Tensor, models: DLoRALModels, cfg: DLoRALConfig,
                   progress: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """Channels-last frames ``(N, H, W, 3)`` in [0, 1] -> ``(N, 4H, 4W, 3)`` float32 (CPU), as
    :func:`upscale_frames`; the output is allocated once, frames are streamed per window."""
    n, h, w, _ = check_images(images).shape
    out = torch.empty(n, 4 * h, 4 * w, 3)
    for i, f in enumerate(upscale_video((im.movedim(-1, 0) for im in images), models, cfg, progress)):
        out[i] = f.movedim(0, -1)
    return out
