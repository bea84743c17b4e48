"""Cost of NAG on one joint (MM-DiT) attention: the LSE merge against one plain joint attention and
against the naive two-pass method. Pure core (``nag.joint``), no host.

Each variant computes what a joint block needs from its attention (text queries and image
queries, heads ``H`` x ``D``, one batch row, ``T`` positive text tokens, ``N`` NAG-negative text
tokens, ``I`` image tokens):

* ``plain``: one joint attention, queries ``[text, image]`` over keys ``[text, image]`` (torch SDPA);
  no NAG, the 1.0 of the ratios.
* ``naive``: ``plain`` + the image queries again over ``[negative text, image]`` (SDPA) +
  ``nag_combine``. This is the cheapest two-pass form (the negative text queries are not run;
  the official Flux code also runs them, which costs more).
* ``lse``: the text queries over ``[text, image]`` (SDPA) + :func:`nag.joint_nag` on the image
  queries with :func:`nag.fused_attention_with_lse` (image keys once, each text once, LSE merge,
  ``nag_combine``).

Variants run interleaved round by round; the median of ``--repeats`` is reported, with ratios and an
analytic count of logits (``q.k`` products) for comparison. CPU: process CPU time with
``--threads`` torch threads (1 by default: robust on a shared machine). ``--gpu``: CUDA, bfloat16,
CUDA-event timing, Flux-like dims by default (24 x 128, 4096 image, 512 text tokens). The LSE and
naive guided outputs are compared (max abs diff) as a sanity check.

Usage (repo root): ``.venv/bin/python bench/bench_nag_joint.py [--image 2048 --text 256 --heads 8 --dim 64]``,
``... --gpu``. Writes ``bench/results/nag_joint.json`` (``nag_joint_gpu.json`` with ``--gpu``).
"""
import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nag import fused_attention_with_lse, joint_nag, merge_heads, nag_combine  # noqa: E402

SCALE, TAU, ALPHA = 11.0, 2.5, 0.25


def logit_counts(t: int, n: int, i: int) -> dict:
    """Number of q.k products of each variant (the attention FLOPs are 4*D times these)."""
    plain = (t + i) ** 2
    return {"plain": plain, "naive": plain + i * (n + i), "lse": plain + i * n}


def variants(qt, qi, kt, ki, vt, vi, kn, vn):
    """The three variants as closures returning (text part, image part) outputs."""
    def plain():
        out = F.scaled_dot_product_attention(torch.cat([qt, qi], 2), torch.cat([kt, ki], 2), torch.cat([vt, vi], 2))
        return merge_heads(out[:, :, :qt.shape[2]]), merge_heads(out[:, :, qt.shape[2]:])

    def naive():
        txt, zp = plain()
        zn = merge_heads(F.scaled_dot_product_attention(qi, torch.cat([kn, ki], 2), torch.cat([vn, vi], 2)))
        return txt, nag_combine(zp, zn, SCALE, TAU, ALPHA)

    def lse():
        txt = merge_heads(F.scaled_dot_product_attention(qt, torch.cat([kt, ki], 2), torch.cat([vt, vi], 2)))
        return txt, joint_nag(qi, ki, vi, kt, vt, kn, vn, SCALE, TAU, ALPHA,
                              attention=lambda q, k, v, m: fused_attention_with_lse(q, k, v, m, out_dtype=torch.float32))

    return {"plain": plain, "naive": naive, "lse": lse}


def timer(gpu: bool):
    if not gpu:
        def run(fn):
            t0 = time.process_time()
            fn()
            return time.process_time() - t0
        return run

    def run(fn):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b) / 1000.0
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="CUDA, bfloat16, Flux-like dims unless given")
    ap.add_argument("--heads", type=int)
    ap.add_argument("--dim", type=int, help="head dim")
    ap.add_argument("--image", type=int, help="image tokens")
    ap.add_argument("--text", type=int, help="positive text tokens")
    ap.add_argument("--negative", type=int, help="NAG-negative text tokens (default: --text)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    gpu_defaults, cpu_defaults = (24, 128, 4096, 512), (2, 32, 256, 32)
    h, d, i, t = (x if x is not None else dflt
                  for x, dflt in zip((a.heads, a.dim, a.image, a.text), gpu_defaults if a.gpu else cpu_defaults))
    n = a.negative if a.negative is not None else t
    if a.gpu and not torch.cuda.is_available():
        sys.exit("--gpu: torch sees no CUDA device")
    torch.set_num_threads(a.threads)
    dev, dtype = ("cuda", torch.bfloat16) if a.gpu else ("cpu", torch.float32)
    g = torch.Generator().manual_seed(0)

    def r(length):
        return torch.randn(1, h, length, d, generator=g).to(dev, dtype)

    qt, qi, kt, ki, vt, vi, kn, vn = r(t), r(i), r(t), r(i), r(t), r(i), r(n), r(n)
    fns = variants(qt, qi, kt, ki, vt, vi, kn, vn)
    with torch.no_grad():
        check = (fns["lse"]()[1].float() - fns["naive"]()[1].float()).abs().max().item()
        run = timer(a.gpu)
        for _ in range(a.warmup):
            for fn in fns.values():
                run(fn)
        times = {k: [] for k in fns}
        for _ in range(a.repeats):
            for k, fn in fns.items():
                times[k].append(run(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    counts = logit_counts(t, n, i)
    out = {
        "command": " ".join(["bench/bench_nag_joint.py"] + sys.argv[1:]),
        "device": torch.cuda.get_device_name() if a.gpu else f"cpu ({platform.processor() or platform.machine()})",
        "threads": None if a.gpu else torch.get_num_threads(), "torch": torch.__version__, "dtype": str(dtype),
        "dims": {"heads": h, "head_dim": d, "image_tokens": i, "text_tokens": t, "negative_tokens": n, "batch": 1},
        "nag": {"scale": SCALE, "tau": TAU, "alpha": ALPHA},
        "timing": ("CUDA events" if a.gpu else "process CPU time") + " per call, median over repeats, "
                  "variants interleaved round by round",
        "note": "ratios measured in one run; the CPU machine is shared, so absolute times are indicative only",
        "max_abs_diff_lse_vs_naive_image_output": check,
        "results": {k: {"s": med[k], "ratio_vs_plain": med[k] / med["plain"],
                        "runs_s": [round(x, 6) for x in times[k]]} for k in fns},
        "ratio_lse_vs_naive": med["lse"] / med["naive"],
        "logit_model": {**counts, "lse_vs_plain": counts["lse"] / counts["plain"],
                        "naive_vs_plain": counts["naive"] / counts["plain"],
                        "lse_vs_naive": counts["lse"] / counts["naive"]},
    }
    path = pathlib.Path(a.out or REPO / "bench" / "results" / ("nag_joint_gpu.json" if a.gpu else "nag_joint.json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("device", "dims", "max_abs_diff_lse_vs_naive_image_output",
                                          "ratio_lse_vs_naive", "logit_model")}))
    for k in fns:
        print(f"{k:6s} {med[k] * 1e3:9.2f} ms  x{med[k] / med['plain']:.3f} of plain")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
