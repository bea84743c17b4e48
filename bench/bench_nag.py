"""NAG step cost on the trained tiny Wan, through the real node in a real host, on CPU.

In one process, runs interleaved round by round (median of ``--repeats``):
* ``unguided``: cfg 1, no NAG (one forward per step);
* ``nag``: cfg 1 with Atelier NAG (one forward per step + the extra cross-attention);
* ``cfg``: cfg 5, no NAG (two forwards per step: the 2x baseline);
* ``nag_cfg``: cfg 5 with NAG (only the positive rows guided);
* ``magcache`` and ``nag_magcache``: cfg 1 with Atelier MagCache (preset wan2.1_t2v_1.3B,
  0.12/K2/0.2), without and with NAG.
Reports process CPU seconds per step (``--threads 1`` by default: on a shared machine CPU time
is far less disturbed by other jobs than wall time) and ratios against ``unguided``. Also an analytic FLOP estimate of
NAG's extra work for Wan2.1-1.3B at 480p/81 frames (clearly an estimate, not a measurement:
no GPU was lent to measure real dimensions).

Usage (repo root): ``COMFYUI_DIR=~/ComfyUI .venv/bin/python bench/bench_nag.py``.
Writes ``bench/results/nag.json``.
"""
import argparse
import json
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import hostbridge  # noqa: E402

PROMPT, NAG_NEGATIVE = "square moving right", "red"


def flops_estimate(dim=1536, ffn=8960, layers=30, tokens=21 * 30 * 52, text=512, neg=512):
    """Multiply-adds x2 of one Wan block stack forward, and of NAG's extra work (per row)."""
    lin = 2 * tokens * dim * dim
    base = layers * (4 * lin + 4 * tokens * tokens * dim          # self-attn q,k,v,o + QK^T, AV
                     + 2 * lin + 4 * text * dim * dim + 4 * tokens * text * dim   # cross-attn
                     + 4 * tokens * dim * ffn)                                  # ffn
    extra = layers * (4 * neg * dim * dim + 4 * tokens * neg * dim + 12 * tokens * dim)  # K-,V-, attn, combine
    return {"model": "Wan2.1-1.3B shape (dim 1536, 30 layers)", "video_tokens": tokens, "text_tokens": text,
            "negative_tokens": neg, "base_gflop": base / 1e9, "nag_extra_gflop": extra / 1e9,
            "nag_step_ratio_estimate": (base + extra) / base}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=16, help="latent height/width")
    ap.add_argument("--frames", type=int, default=3, help="latent frames")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 with CPU-time measurement is robust on a shared machine")
    ap.add_argument("--weights", default=None, help="trained tiny Wan (default: the shipped one)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "nag.json"))
    a = ap.parse_args()

    try:
        pack = hostbridge.import_pack(name="atelier_bench_pack", cpu="force", progress_bars=False)
    except hostbridge.HostTreeError as exc:
        sys.exit(f"bench_nag: {exc}")
    host = hostbridge.host_tree()
    import torch
    import comfy.sd
    import comfy.utils  # noqa: F401
    import nodes as host_nodes
    tinywan = hostbridge.submodule(pack, "tinywan")
    torch.set_num_threads(max(1, a.threads))

    sd, meta = tinywan.load_trained_state_dict(a.weights)
    model = comfy.sd.load_diffusion_model_state_dict(sd)
    pos = [[tinywan.encode_prompt(PROMPT)[None], {}]]
    neg_cfg = [[tinywan.encode_prompt("")[None], {}]]
    nag_neg = [[tinywan.encode_prompt(NAG_NEGATIVE)[None], {}]]
    latent = {"samples": torch.zeros(1, 16, a.frames, a.size, a.size)}

    def run_node(cls, **kw):   # V3 (execute) or V1 (FUNCTION) node class
        return cls.execute(**kw)[0] if hasattr(cls, "define_schema") else getattr(cls(), cls.FUNCTION)(**kw)[0]

    nag = run_node(pack.nodes.nag_nodes.AtelierNAGWan, model=model, nag_negative=nag_neg, scale=11.0, tau=2.5,
                   alpha=0.25, sigma_end=0.0)

    def magcache(m):
        return run_node(pack.nodes.magcache_nodes.AtelierMagCacheWan, model=m, preset="wan2.1_t2v_1.3B",
                        thresh=0.12, k=2, retention=0.2, start_step=-1, end_step=-1, protect_last=0,
                        cache_device="auto", schedule_steps=0, preview_steps=a.steps)

    variants = {"unguided": (model, 1.0), "nag": (nag, 1.0), "cfg": (model, 5.0), "nag_cfg": (nag, 5.0),
                "magcache": (magcache(model), 1.0), "nag_magcache": (magcache(nag), 1.0)}

    def run(m, cfg):
        """Process CPU seconds of one sampling run (wall time is skewed by other jobs)."""
        t = time.process_time()
        host_nodes.common_ksampler(m, 0, a.steps, cfg, "euler", "simple", pos, neg_cfg, latent)
        return time.process_time() - t

    for m, cfg in variants.values():
        run(m, cfg)  # warm-up
    times = {k: [] for k in variants}
    for _ in range(a.repeats):
        for k, (m, cfg) in variants.items():
            times[k].append(run(m, cfg))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["unguided"]
    results = {k: {"s_per_step": med[k] / a.steps, "ratio_vs_unguided": med[k] / base,
                   "runs_s": [round(t, 4) for t in times[k]]} for k in variants}
    out = {
        "host": str(host), "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "model": f"tinywan trained ({json.dumps(meta.get('config'))})",
        "training": meta.get("training"),
        "latent": [1, 16, a.frames, a.size, a.size], "steps": a.steps, "repeats": a.repeats,
        "prompt": PROMPT, "nag_negative": NAG_NEGATIVE, "nag": {"scale": 11.0, "tau": 2.5, "alpha": 0.25},
        "timing": "process CPU time per run, median over repeats, variants interleaved round by round",
        "note": "ratios measured in one run; the machine is shared (2 cores), so absolute times are "
                "indicative only; not a timed test",
        "results": results,
        "real_dims_estimate": flops_estimate(),
    }
    for k, r in results.items():
        print(f"{k:>13}: {r['s_per_step'] * 1000:8.2f} ms/step  x{r['ratio_vs_unguided']:.3f}")
    print(json.dumps(out["real_dims_estimate"]))
    pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(a.out).write_text(json.dumps(out, indent=2))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
