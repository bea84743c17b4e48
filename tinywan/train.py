"""Train the tiny Wan2.1 on procedural shape clips (rectified flow, as Wan).

From the repo root::

    nice -n 10 python -m tinywan.train --out tinywan/weights/tiny_wan_t2v.safetensors \
        --iters 2500 --seed 0 --threads 1

(the shipped weights were made by exactly this command; about 0.2 s per iteration on two
idle cores, 0.5 s on a machine shared with other jobs, where one thread beats two).

Objective: x_s = (1 - s) * x0 + s * noise, the model at timestep 1000*s predicts
v = noise - x0 (ComfyUI's CONST flow parameterisation, ``denoised = x - s*v``).
Noise levels: half the batch uniform in (0, 1), half through Wan's shift 8
(``8u / (1 + 7u)``), which is where the sampler spends its steps.
Prompts drop colour, shape and motion words independently (p=0.3 each) and are empty
with p=0.1, so a prompt can leave an attribute open and CFG has an unconditional branch.
The saved weights are an exponential moving average; float32 safetensors with the
config, seeds and training time in the metadata. Deterministic for a seed and thread count.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import time

import torch

from . import data, vae
from .model import TinyWan, TinyWanConfig

TRAIN_CONFIG = TinyWanConfig(variant="t2v", dim=128, ffn_dim=384, num_layers=3)


def _sigmas(n: int, g: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, generator=g).clamp(1e-3, 1 - 1e-3)
    shifted = 8.0 * u / (1 + 7.0 * u)
    return torch.where(torch.arange(n) % 2 == 0, u, shifted)


def train(iters: int = 2500, seed: int = 0, batch: int = 16, lr: float = 1e-3, threads: int = 2,
          ema_decay: float = 0.998, log_every: int = 200, config: TinyWanConfig = TRAIN_CONFIG,
          checkpoint=None, save_every: int = 0):
    """Train and return ``(ema_state_dict, info)``. ``checkpoint(ema, info)`` is called every
    ``save_every`` iterations (0: never) with the EMA so far."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = TinyWan(config).train()
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    warm = min(200, iters // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(i, iters) / iters))))
    g_data = torch.Generator().manual_seed(seed + 1)
    g_noise = torch.Generator().manual_seed(seed + 2)
    t0 = time.time()
    run = 0.0
    for it in range(iters):
        x0, ctx, _ = data.training_batch(batch, g_data)
        s = _sigmas(batch, g_noise)
        noise = torch.randn(x0.shape, generator=g_noise)
        sv = s.view(-1, 1, 1, 1, 1)
        xs = (1 - sv) * x0 + sv * noise
        v = model(xs, s * 1000.0, ctx)
        loss = torch.mean((v - (noise - x0)) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        d = min(ema_decay, (1 + it) / (10 + it))
        with torch.no_grad():
            for k, p in model.state_dict().items():
                ema[k].mul_(d).add_(p.detach(), alpha=1 - d)
        run = loss.item() if it == 0 else 0.98 * run + 0.02 * loss.item()
        if log_every and ((it + 1) % log_every == 0 or it == 0):
            print(f"iter {it + 1}/{iters} loss {run:.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{time.time() - t0:.0f}s", flush=True)
        if checkpoint is not None and save_every and (it + 1) % save_every == 0 and it + 1 < iters:
            checkpoint(ema, dict(iters=iters, iters_done=it + 1, seed=seed, batch=batch, lr=lr, threads=threads,
                                 ema_decay=ema_decay, loss=round(run, 5), train_seconds=round(time.time() - t0, 1)))
    info = dict(iters=iters, iters_done=iters, seed=seed, batch=batch, lr=lr, threads=threads,
                ema_decay=ema_decay, loss=round(run, 5), train_seconds=round(time.time() - t0, 1))
    return ema, info


def metadata(config: TinyWanConfig, info: dict) -> dict:
    """safetensors metadata (all strings)."""
    return {
        "format": "atelier-tinywan",
        "architecture": "wan2.1_t2v",
        "config": json.dumps({k: getattr(config, k) for k in ("variant", "dim", "ffn_dim", "num_layers",
                                                              "in_dim", "out_dim", "text_dim")}),
        "vocab_seed": str(data.VOCAB_SEED),
        "vocab": json.dumps(list(data.VOCAB)),
        "vae_seed": str(vae.VAE_SEED),
        "latent_shape": json.dumps([16, data.FRAMES, data.SIZE // 2, data.SIZE // 2]),
        "sampling": json.dumps({"sampler": "euler", "scheduler": "simple", "shift": 8.0}),
        "training": json.dumps(info),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m tinywan.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tinywan/weights/tiny_wan_t2v.safetensors", help="output .safetensors")
    ap.add_argument("--iters", type=int, default=2500, help="training iterations")
    ap.add_argument("--seed", type=int, default=0, help="seed for init, data and noise")
    ap.add_argument("--batch", type=int, default=16, help="clips per iteration")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch CPU threads (use 1 on an oversubscribed machine: much faster there)")
    ap.add_argument("--save-every", type=int, default=500, help="write the EMA so far every N iterations (0: off)")
    a = ap.parse_args(argv)
    if a.iters < 1:
        raise SystemExit(f"--iters {a.iters}: must be >= 1")
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(sd, info):
        from safetensors.torch import save_file
        tmp = out.with_name(out.name + ".tmp")
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata=metadata(TRAIN_CONFIG, info))
        tmp.replace(out)

    sd, info = train(iters=a.iters, seed=a.seed, batch=a.batch, lr=a.lr, threads=a.threads,
                     checkpoint=save, save_every=a.save_every)
    save(sd, info)
    print(json.dumps({"out": str(out), "bytes": out.stat().st_size, **info}))


if __name__ == "__main__":
    main()
