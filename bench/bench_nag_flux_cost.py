"""Where NAG's extra cost goes on Flux-dev, counted at the real dims and measured on the CPU at 1/8 of them.

Flux-dev: hidden 3072 (24 heads of 128), MLP 4x, 19 double + 38 single blocks; a 1024 px image is 4096 image
tokens; the T5 text is 512 tokens (a long prompt; the host pads T5 to at least 256). The NAG negative is its own
T5 encoding: 256 tokens for a short negative (the host's padding), 512 for a long one.

1. **Count** (no hardware): per block, the matmul FLOPs of an unguided step (every token through the block's
   linear layers, ``24 d^2`` FLOPs per token in a double block's stream and in a single block alike; the joint
   attention ``4 d t^2`` for ``t = Lp + Li`` tokens) and what NAG adds through the host's own path
   (``nodes/nag_joint_hook.py``: the negative's tokens are in the joint sequence):

   * ``negative_linear``: the negative's tokens through every block's linear layers (``24 d^2 Ln``);
   * ``image_x_negative``: the image queries over the negative's keys (``4 d Li Ln``), the only part of Z-
     that is not shared with Z+ (the image->image part is attended once, ``nag.joint_pair``);
   * ``negative_queries``: the negative's queries over ``[negative, image]`` (``4 d Ln (Ln + Li)``): its stream
     evolves by itself, as in the official Flux NAG;
   * ``cross_text_rows``: the positive text's queries over the negative's keys and the reverse
     (``8 d Lp Ln``), computed and not read: the three partial attentions run over every query of the sequence,
     so that each key set is a view of the joint keys (no copy);

   and the bytes of the element-wise passes and copies that NAG's core adds per guided joint call (the
   log-sum-exp merges and the combine rule, the write-back, key/value copies, the extra attention outputs),
   counted pass by pass from ``nag/joint.py``, ``nag/joint_call.py``, ``nag/fused.py``, ``nag/combine.py``
   (:func:`byte_count`); they are turned into time with an H100's rates (``--tflops``, ``--tbps``) to be set
   against the FLOPs.

2. **Measure** on the CPU at 1/8 of every dim (hidden 384 = 3 heads of 128, 512 image, 64 text, 32 or 64
   negative tokens: the FLOP proportions of the real dims, since linear and attention FLOPs both scale with the
   cube), a Flux single block (the host's layout: ``linear1`` to q/k/v + MLP, the joint attention, ``linear2``)
   plain against the same block with the negative's tokens and ``nag.nag_joint_attention``; interleaved, median
   of ``--repeats``, process CPU time, 1 thread. The CPU's element-wise/matmul speed ratio is not a GPU's, so
   this checks the count's FLOP part and shows the size of the element-wise part, it does not predict the GPU.

3. **On a GPU** (``--device cuda``): a Flux-dev single block at the real dims in bf16, plain, with NAG through
   the unfused element-wise kernels, through the hand-written Triton kernel (``nag.triton_rule``, the default on
   CUDA) and through the ``torch.compile``d one (``nag.fused``, its fallback),
   CUDA-synchronised wall time, interleaved medians (about a minute on one H100, most of it the first compile).

Usage: ``python bench/bench_nag_flux_cost.py [--repeats 15] [--device cuda]`` (core venv; no host). Writes
``bench/results/nag_flux_cost_views.json`` (``nag_flux_cost_views_cuda.json`` on a GPU; the earlier rounds'
``nag_flux_cost.json`` is kept as it was).
"""
import argparse
import json
import pathlib
import statistics
import sys
import time

import torch

REPO = pathlib.Path(__file__).resolve().parents[1]


FLUX_DEV = dict(d=3072, heads=24, double=19, single=38, image=4096, text=512)


def elementwise_ratio(d, image, text, negative, tflops=600.0, tbps=3.0, which="current"):
    """Per joint block: the time of NAG's element-wise passes (:func:`byte_count`'s ``which``; default the
    current code unfused) at ``tbps`` over the time of an unguided block's matmuls at ``tflops``."""
    t = text + image
    block_s = (24 * d * d * t + 4 * d * t * t) / (tflops * 1e12)
    return sum(byte_count(d, image, text, negative)[which].values()) / (tbps * 1e12) / block_s


def flop_count(d, heads, double, single, image, text, negative):
    """Matmul FLOPs of one unguided Flux step and NAG's additions (see the module doc), per step."""
    blocks = double + single
    t = text + image
    linear = 24 * d * d * t * blocks
    attention = 4 * d * t * t * blocks
    extra = {
        "negative_linear": 24 * d * d * negative * blocks,
        "image_x_negative": 4 * d * image * negative * blocks,
        "negative_queries": 4 * d * negative * (negative + image) * blocks,
        "cross_text_rows": 8 * d * text * negative * blocks,
    }
    return {"unguided": {"linear": linear, "attention": attention, "total": linear + attention}, "nag": extra,
            "ratio": 1 + sum(extra.values()) / (linear + attention)}


def byte_count(d, image, text, negative, elem=2, work=4, heads=None):
    """Bytes of the element-wise passes (and copies) NAG's core adds in one guided joint call (batch 1, every
    row guided: cfg 1), pass by pass.

    ``elem``: bytes of the model's dtype (bf16: 2); ``work``: the merge's and combine rule's float32; ``heads``:
    None = ``d // 128`` (Flux). A pass reading ``r`` and writing ``w`` tensors of ``n`` elements moves ``(r + w)
    n`` elements. The partial attentions' outputs are in the model's dtype (``fused_attention_with_lse`` returns
    the kernel's output). Returns ``{variant: {what: bytes}}``:

    * ``fused``: this code on CUDA (``nag.nag_joint_attention``): every query of the sequence attends the image,
      positive-text and negative-text keys as three views of the joint keys (no copy), and the hand-written
      Triton kernel (``nag.triton_rule``, one program per token) reads each token's three parts and
      log-sum-exps once and writes the whole sequence once, token-major: that tensor is the call's output (no
      write-back, and the host's ``transpose(1, 2).reshape`` is a view, as after its own SDPA call);
    * ``fused_compiled``: the same through the ``torch.compile``d kernel (``nag.fused``: the fallback where the
      hand-written one fails): inductor's reduction over a token's 3,072 channels is not single-pass, so it
      reads each part twice (once to reduce, once for the element-wise pass), at most (the second read may come
      from the L2 cache);
    * ``current``: this code with the fused kernel off (``nag.fused.policy("off")``, or no Triton): the eager
      ``nag.joint.sequence_from_parts``;
    * ``fused_before_views``: the code before this round on CUDA, counted the same way: image queries only in the
      fused kernel, written back into a head-major output, the positive text's queries over a concatenated copy
      of ``[positive text, image]`` keys/values, the host's reshape of the head-major output a copy;
    * ``fused_as_counted_before`` / ``unfused_before_views`` / ``before_cut``: the earlier rounds' counts as they
      were made (the first assumed float32 parts, the model's dtype in fact, and left out the output reshape and
      the extra attention outputs).

    ``partial_outputs``: the attention outputs written beyond the one a plain call writes (its ``text + image``
    rows); ``lse``: the parts' float32 log-sum-exps read by the kernel."""
    heads = heads or d // 128
    length = image + text + negative
    n = image * d                       # the image queries' outputs (B=1, H*D = d)
    nt = (text + negative) * d          # the two texts' queries' outputs
    nl = length * d                     # the whole sequence
    up, lerp2, down, copy = elem + work, 3 * work, work + elem, 2 * elem
    combine_core = lerp2 + 2 * work + 2 * work + lerp2          # G = lerp, two L1 norms, G *= f, lerp out
    kv_pos = 2 * (image + text) * d * copy                      # cat([positive, image]) of k and v
    kv_neg = 2 * (image + negative) * d * copy
    kernel = 3 * elem + elem                                    # three model-dtype parts read once, one write
    kernel_two_reads = 2 * 3 * elem + elem                      # the same parts read twice (inductor's loops)
    fused = {
        "fused_kernel": nl * kernel,
        "lse": 3 * length * heads * work,
        "partial_outputs": (2 * image + 2 * text + 3 * negative) * d * elem,
    }
    fused_compiled = {   # inductor's looped reduction: each part read twice, the log-sum-exps too
        "fused_kernel": nl * kernel_two_reads,
        "lse": 2 * 3 * length * heads * work,
        "partial_outputs": fused["partial_outputs"],
    }
    current = {
        "image_part_to_float32": n * up,
        "merges": 2 * n * (up + lerp2),                          # the text part up, lerp with the image part
        "combine": n * (combine_core + down),
        "write_back": n * copy,                                  # the image rows into the token-major output
        "text_merges": nt * (up + up + lerp2 + down + copy),     # merge_attention, then into the output
        "partial_outputs": fused["partial_outputs"],
    }
    fused_before_views = {
        "fused_kernel": n * kernel_two_reads,
        "lse": 2 * 3 * image * heads * work,
        "write_back": n * copy,
        "text_kv_copy_positive": kv_pos,                         # text first: [negative, image] is read in place
        "text_outputs_write": nt * copy,
        "output_reshape": nl * copy,                             # the host's reshape of a head-major output
        "partial_outputs": (2 * image + negative) * d * elem,
    }
    fused_as_counted_before = {
        "fused_kernel": n * (2 * 3 * work + elem),
        "write_back": n * copy,
        "text_kv_copy_positive": kv_pos,
    }
    unfused_before_views = {
        "image_part_to_float32": n * up,
        "merges": 2 * n * (up + lerp2),
        "combine": n * (combine_core + down),
        "write_back": n * copy,
        "text_kv_copy_positive": kv_pos,
    }
    before = {
        "merges": 2 * n * (up + up + lerp2 + down),
        "merge_heads": 2 * n * copy,
        "combine": n * (up + up + combine_core + down),
        "write_back": n * copy,
        "zero_output": (text + negative + image) * d * elem,
        "text_kv_copy_positive": kv_pos,
        "text_kv_copy_negative": kv_neg,
    }
    return {"fused": fused, "fused_compiled": fused_compiled, "current": current, "fused_before_views": fused_before_views,
            "fused_as_counted_before": fused_as_counted_before, "unfused_before_views": unfused_before_views,
            "before_cut": before}


def _block_fns(d, heads, image, text, negative, seed=0, dtype=torch.float32, device="cpu"):
    """Callables of one Flux-like single block (the host's layout: ``linear1`` to q/k/v + MLP, the joint
    attention, ``linear2``), plain and with the negative's tokens and ``nag.nag_joint_attention``, and of the
    attention alone; the FLOP ratio of the NAG block."""
    sys.path.insert(0, str(REPO))
    from nag import NAGConfig
    from nag.joint import fused_attention_with_lse, joint_nag
    from nag.joint_call import JointSpans, nag_joint_attention
    g = torch.Generator().manual_seed(seed)
    dh = d // heads
    lin1 = torch.randn(7 * d, d, generator=g) / d ** 0.5
    lin2 = torch.randn(d, 5 * d, generator=g) / (5 * d) ** 0.5
    x_plain = torch.randn(1, text + image, d, generator=g)
    neg = torch.randn(1, negative, d, generator=g)
    x_nag = torch.cat([x_plain[:, :text], neg, x_plain[:, text:]], dim=1)
    lin1, lin2, x_plain, x_nag = (t.to(device=device, dtype=dtype) for t in (lin1, lin2, x_plain, x_nag))
    config = NAGConfig(scale=5.0, tau=2.5, alpha=0.25)
    spans = JointSpans(True, text + negative, negative)

    def attend(q, k, v, m):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)

    def block(x, nag):
        h = x @ lin1.T
        qkv, mlp = h[..., :3 * d], h[..., 3 * d:]
        q, k, v = (t.reshape(1, -1, heads, dh).transpose(1, 2) for t in qkv.split(d, dim=-1))
        if nag:
            a = nag_joint_attention(q, k, v, spans, [slice(0, 1)], config, attend)
        else:
            a = attend(q, k, v, None)
        a = a.transpose(1, 2).reshape(1, -1, d)
        return x + torch.cat([a, torch.nn.functional.gelu(mlp, approximate="tanh")], dim=-1) @ lin2.T

    def attention_only(x, nag):
        q = k = v = x.reshape(1, -1, heads, dh).transpose(1, 2)
        return nag_joint_attention(q, k, v, spans, [slice(0, 1)], config, attend) if nag else attend(q, k, v, None)

    def attention_before_cut(x):
        """The guided call as it was before the cut (public core pieces: joint_nag, cat of both texts' keys)."""
        q = k = v = x.reshape(1, -1, heads, dh).transpose(1, 2)
        pos, neg, img = spans.split(q.shape[2])
        out = torch.zeros_like(q)
        g = joint_nag(q[:, :, img], k[:, :, img], v[:, :, img], k[:, :, pos], v[:, :, pos], k[:, :, neg],
                      v[:, :, neg], config.scale, config.tau, config.alpha, attention=fused_attention_with_lse)
        out[:, :, img] = g.reshape(1, g.shape[1], heads, -1).transpose(1, 2)
        for qt in (pos, neg):
            ks, vs = (torch.cat([t[:, :, qt], t[:, :, img]], dim=2) for t in (k, v))
            out[:, :, qt] = attend(q[:, :, qt], ks, vs, None)
        return out

    fns = {"block_plain": lambda: block(x_plain, False), "block_nag": lambda: block(x_nag, True),
           "attention_plain": lambda: attention_only(x_plain, False),
           "attention_nag": lambda: attention_only(x_nag, True),
           "attention_nag_before_cut": lambda: attention_before_cut(x_nag)}
    flop_ratio = 1 + (24 * d * d * negative + 4 * d * image * negative + 4 * d * negative * (negative + image)
                      + 8 * d * text * negative) \
        / (24 * d * d * (text + image) + 4 * d * (text + image) ** 2)
    return fns, flop_ratio


def _cpu_block(d, heads, image, text, negative, repeats, seed=0, dtype=torch.float32):
    """CPU seconds of one Flux-like single block, plain and with NAG (median over interleaved rounds), in
    ``dtype`` (bfloat16: the casts the cut removed are real passes)."""
    fns, flop_ratio = _block_fns(d, heads, image, text, negative, seed, dtype)
    times = {k: [] for k in fns}
    with torch.no_grad():
        for _ in range(2):
            fns["block_plain"](), fns["block_nag"]()
        for _ in range(repeats):
            for key, fn in fns.items():
                t0 = time.process_time()
                fn()
                times[key].append(time.process_time() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"seconds": med, "block_ratio": med["block_nag"] / med["block_plain"],
            "attention_ratio": med["attention_nag"] / med["attention_plain"],
            "attention_ratio_before_cut": med["attention_nag_before_cut"] / med["attention_plain"],
            "flop_ratio_of_this_block": flop_ratio}


def device_block(d, heads, image, text, negative, repeats, device="cuda", dtype=torch.bfloat16, seed=0):
    """Wall seconds (CUDA-synchronised) of one Flux-like single block at the given dims on ``device``: plain,
    NAG with the unfused element-wise kernels (``nag.fused.policy("off")``) and NAG with the fused compiled
    kernel (``policy("on")``: the node's default on CUDA), interleaved, medians of ``repeats``; the fused
    kernel is compiled (and checked against the unfused output) before timing. On the CPU at tiny dims this is
    the check that keeps the GPU path from rotting (tests/core/test_bench_nag_flux_cost.py)."""
    sys.path.insert(0, str(REPO))
    from nag import fused, triton_rule
    fns, flop_ratio = _block_fns(d, heads, image, text, negative, seed, dtype, device)

    def sync():
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    variants = {"block_plain": ("auto", True, fns["block_plain"]), "block_nag_unfused": ("off", True, fns["block_nag"]),
                "block_nag_fused": ("on", True, fns["block_nag"]),
                "block_nag_fused_compiled": ("on", False, fns["block_nag"]),
                "attention_plain": ("auto", True, fns["attention_plain"]),
                "attention_nag_unfused": ("off", True, fns["attention_nag"]),
                "attention_nag_fused": ("on", True, fns["attention_nag"]),
                "attention_nag_fused_compiled": ("on", False, fns["attention_nag"])}
    times = {k: [] for k in variants}
    with torch.no_grad():
        t0 = time.perf_counter()
        with fused.policy("on"):
            a = fns["block_nag"]().float()
        compile_s = time.perf_counter() - t0
        with fused.policy("off"):
            b = fns["block_nag"]().float()
        t0 = time.perf_counter()
        with fused.policy("on"), fused.hand_kernel(False):
            c = fns["block_nag"]().float()
        compiled_s = time.perf_counter() - t0
        max_diff = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
        max_diff_compiled = float((c - b).abs().max() / b.abs().max().clamp_min(1e-30))
        hand_used = triton_rule.available(b.to(device)) and not fused.hand_kernel_failure()
        for _ in range(2):
            for mode, hand, fn in variants.values():
                with fused.policy(mode), fused.hand_kernel(hand):
                    fn()
        for _ in range(repeats):
            for key, (mode, hand, fn) in variants.items():
                with fused.policy(mode), fused.hand_kernel(hand):
                    sync()
                    t0 = time.perf_counter()
                    fn()
                    sync()
                    times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"device": str(device), "dtype": str(dtype).replace("torch.", ""), "seconds": med,
            "block_ratio_unfused": med["block_nag_unfused"] / med["block_plain"],
            "block_ratio_fused": med["block_nag_fused"] / med["block_plain"],
            "block_ratio_fused_compiled": med["block_nag_fused_compiled"] / med["block_plain"],
            "attention_ratio_fused_compiled": med["attention_nag_fused_compiled"] / med["attention_plain"],
            "hand_written_kernel_used": hand_used, "hand_kernel_failure": fused.hand_kernel_failure(),
            "first_compiled_call_s": compiled_s, "compiled_vs_unfused_max_rel_diff": max_diff_compiled,
            "attention_ratio_unfused": med["attention_nag_unfused"] / med["attention_plain"],
            "attention_ratio_fused": med["attention_nag_fused"] / med["attention_plain"],
            "flop_ratio_of_this_block": flop_ratio, "first_fused_call_s": compile_s,
            "fused_vs_unfused_max_rel_diff": max_diff}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--tflops", type=float, default=600.0, help="dense bf16 matmul rate for the time estimate")
    ap.add_argument("--tbps", type=float, default=3.0, help="memory bandwidth (TB/s) for the element-wise passes")
    ap.add_argument("--device", default="cpu", help="cuda: time a real-dims Flux single block (bf16) plain, NAG "
                    "unfused and NAG fused, instead of the CPU check at 1/8 scale")
    ap.add_argument("--out", default=None, help="default bench/results/nag_flux_cost_views.json "
                    "(nag_flux_cost_views_cuda.json with --device cuda)")
    a = ap.parse_args()
    a.out = a.out or str(REPO / "bench" / "results" / ("nag_flux_cost_views.json" if a.device == "cpu"
                                                      else "nag_flux_cost_views_cuda.json"))
    torch.set_num_threads(1)
    out = {"dims": FLUX_DEV, "rates": {"tflops": a.tflops, "tbps": a.tbps}, "negatives": {}}
    f = FLUX_DEV
    for ln in (256, 512):
        flops = flop_count(f["d"], f["heads"], f["double"], f["single"], f["image"], f["text"], ln)
        by = byte_count(f["d"], f["image"], f["text"], ln)
        blocks = f["double"] + f["single"]
        step_s = flops["unguided"]["total"] / (a.tflops * 1e12)
        flop_s = sum(flops["nag"].values()) / (a.tflops * 1e12)
        flop_s_before = flop_s - flops["nag"]["cross_text_rows"] / (a.tflops * 1e12)   # earlier code: no cross rows
        est = {}
        for which in by:
            fs = flop_s if which in ("fused", "fused_compiled", "current") else flop_s_before
            byte_s = sum(by[which].values()) * blocks / (a.tbps * 1e12)
            est[which] = {"elementwise_bytes_per_step": sum(by[which].values()) * blocks,
                          "elementwise_s": byte_s, "matmul_s": fs, "ratio": 1 + (fs + byte_s) / step_s}
        out["negatives"][ln] = {"flops": flops, "bytes_per_joint_call": by, "unguided_step_s": step_s,
                                "nag_matmul_s": flop_s, "estimate": est,
                                "shares_of_nag_flops": {k: v / sum(flops["nag"].values())
                                                        for k, v in flops["nag"].items()}}
        print(f"negative {ln}: matmul-FLOP ratio {flops['ratio']:.4f}x; with the element-wise passes at "
              f"{a.tflops:.0f} TFLOP/s, {a.tbps:.1f} TB/s: fused {est['fused']['ratio']:.4f}x (compiled kernel "
              f"{est['fused_compiled']['ratio']:.4f}x), unfused "
              f"{est['current']['ratio']:.4f}x (before the views, same count: fused "
              f"{est['fused_before_views']['ratio']:.4f}x; as counted then {est['fused_as_counted_before']['ratio']:.4f}x"
              f"); shares of NAG's FLOPs "
              + ", ".join(f"{k} {v:.0%}" for k, v in out['negatives'][ln]['shares_of_nag_flops'].items()))
    if a.device != "cpu":
        f = FLUX_DEV
        out["device_real_dims"] = {}
        for ln in (256, 512):
            r = device_block(f["d"], f["heads"], f["image"], f["text"], ln, a.repeats, device=a.device)
            out["device_real_dims"][ln] = r
            print(f"{a.device}, Flux single block, negative {ln}: NAG unfused {r['block_ratio_unfused']:.3f}x, fused "
                  f"{r['block_ratio_fused']:.3f}x (hand-written kernel used: {r['hand_written_kernel_used']}; "
                  f"compiled {r['block_ratio_fused_compiled']:.3f}x) (FLOPs {r['flop_ratio_of_this_block']:.3f}x); attention alone "
                  f"{r['attention_ratio_unfused']:.3f}x / {r['attention_ratio_fused']:.3f}x; first fused call "
                  f"{r['first_fused_call_s']:.1f} s; fused vs unfused {r['fused_vs_unfused_max_rel_diff']:.1e}", flush=True)
        pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(a.out).write_text(json.dumps(out, indent=1, default=str))
        print("wrote", a.out)
        return
    out["cpu_eighth_scale"] = {}
    for ln, dtype in ((32, torch.float32), (64, torch.float32), (32, torch.bfloat16)):
        r = _cpu_block(384, 3, 512, 64, ln, a.repeats, dtype=dtype)
        name = str(dtype).replace("torch.", "")
        out["cpu_eighth_scale"][f"{ln}_{name}"] = r
        print(f"CPU 1/8 scale, {name}, negative {ln}: block {r['block_ratio']:.3f}x (FLOPs {r['flop_ratio_of_this_block']:.3f}x),"
              f" attention alone {r['attention_ratio']:.3f}x (before the cut {r['attention_ratio_before_cut']:.3f}x)")
    pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(a.out).write_text(json.dumps(out, indent=1, default=str))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
