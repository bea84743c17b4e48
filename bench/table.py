"""Print the README benchmark table (Markdown) from ``bench/results/*.json``.

Usage: ``python bench/table.py`` (repo root); paste between the BENCHMARKS markers of the README.
"""
import json
import pathlib

RES = pathlib.Path(__file__).resolve().parent / "results"


def load(name):
    p = RES / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def magcache():
    d = load("magcache")
    if not d:
        return []
    rows = ["| MagCache (tiny trained Wan, host KSampler, CPU) | steps | calls computed | speedup | ideal | vs ideal | "
            "wall overhead / step (thresh 0) | hooks' CPU / model call | PSNR dB | SSIM |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["results"]:
        rows.append(f"| {r['preset']} {r['thresh']}/K{r['k']}/r{r['retention']} | {r['steps']} | "
                    f"{r['computed_calls']}/{r['total_calls']} | {r['speedup']:.2f}x | {r['ideal_speedup']:.2f}x | "
                    f"{r['speedup_vs_ideal']:.3f} | {100 * r['hook_overhead_frac_of_step']:+.1f}% "
                    f"({r['hook_overhead_ms_per_step']:+.1f} ms) | {r['hook_cpu_us_per_call']:.0f} µs | "
                    f"{r['psnr_db_mean']:.1f} | {r['ssim_mean']:.3f} |")
    return rows


def nag():
    d = load("nag")
    if not d:
        return []
    rows = ["| NAG (tiny trained Wan, CPU time per step) | ratio vs unguided |", "|---|---|"]
    for k, v in d["results"].items():
        if isinstance(v, dict) and "ratio_vs_unguided" in v:
            rows.append(f"| {k} | {v['ratio_vs_unguided']:.3f}x |")
    return rows


def restoration():
    d = load("restoration")
    if not d:
        return []
    rows = ["| Restoration full pipeline (CPU, 1 thread) | MP/s | wall s | peak memory above start (scan loaded) | image buffers (35 B/px) "
            "| peak beyond the image buffers |", "|---|---|---|---|---|---|"]
    for r in d["results"]:
        beyond = r.get("peak_beyond_image_buffers_gb")
        rows.append(f"| {r['megapixels']:.0f} MP | {r['mp_per_s']:.3f} | {r['wall_s']:.0f} | "
                    f"{r['peak_minus_before_gb']:.2f} GB | "
                    + (f"{r['image_buffers_gb']:.2f} GB | {beyond:.2f} GB |" if beyond is not None else "- | - |"))
    return rows


MODEL_LABEL = {"full": "full SD2.1 UNet", "small": "small SD2 UNet"}


def dloral():
    d = load("dloral")
    if not d:
        return []
    rows = ["| DLoRAL (CPU, random weights, SD VAE at full size) | UNet | threads | frames | s / frame | peak RSS | "
            "RSS growth |", "|---|---|---|---|---|---|---|"]
    for r in d.get("dloral", []) + d.get("memory_vs_length", []):
        run = r.get("run") or {}
        rows.append(f"| {r['input']} -> {r['output']} px, {r.get('mode', '')} | "
                    f"{MODEL_LABEL.get(r.get('model'), r.get('model', '?'))} | {run.get('threads', '?')} | "
                    f"{r['frames']} | {r['s_per_frame']:.2f} | {r['rss_peak_mib']} MiB | {r['rss_growth_mib']} MiB |")
    samplers = d.get("samplers") or ([d["sampler"]] if d.get("sampler") else [])
    for smp in samplers:
        run = smp.get("run") or {}
        steps = "" if smp["steps_run"] == 50 else f", extrapolated from {smp['steps_run']} steps"
        rows.append(f"| same UNet as a 50-step sampler, {smp['input']} -> {4 * smp['input']} px{steps} | "
                    f"{MODEL_LABEL.get(smp.get('model'), smp.get('model', 'full SD2.1 UNet'))} | "
                    f"{run.get('threads', '?')} | 1 | {smp['seconds']:.0f} | {smp['rss_peak_mib']} MiB | "
                    f"{smp['ratio']:.1f}x DLoRAL's time |")
    return rows


if __name__ == "__main__":
    for part in (magcache(), nag(), restoration(), dloral()):
        if part:
            print("\n".join(part))
            print()
