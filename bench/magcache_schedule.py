"""Cost of the MagCache decision machinery (no model): planning a schedule and deciding per call.

Run from the repository root: ``python bench/magcache_schedule.py``. Writes
``bench/results/magcache_schedule.json`` (a numbered sibling when it exists). The per-call cost of
the whole hook at real shapes is in ``bench/bench_magcache.py`` (``hook_cpu_us_per_call``). These are the per-call costs the node adds on top
of a sampling step (a Wan2.1 1.3B step at 480p takes seconds on a GPU; these are microseconds).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from magcache import MagCacheConfig, MagCacheRun, get_preset, plan_schedule, resolve  # noqa: E402


def per_call(fn, n):
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main():
    curve = get_preset("wan2.1_t2v_1.3B").ratios
    cfg = MagCacheConfig(thresh=0.12, k=2, retention=0.2)
    out = {"preset": "wan2.1_t2v_1.3B", "thresh": 0.12, "k": 2, "retention": 0.2, "results": []}
    for steps in (30, 50):
        plan_s = per_call(lambda: plan_schedule(curve, steps, cfg), 200)
        resolve_s = per_call(lambda: resolve("wan2.2_t2v_A14B", steps=steps).plan(), 200)

        def one_run():
            run = MagCacheRun(curve, steps, cfg)
            for s in range(steps):
                for b in (1, 0):
                    run.decide(b, s, has_residual=True)
            return run.report()

        run_s = per_call(one_run, 100)
        out["results"].append({
            "steps": steps,
            "plan_schedule_us": round(plan_s * 1e6, 1),
            "resolve_and_plan_wan22_us": round(resolve_s * 1e6, 1),
            "run_setup_decide_report_us_per_run": round(run_s * 1e6, 1),
            "decide_us_per_call": round(run_s * 1e6 / (2 * steps), 2),
            "computed_calls": plan_schedule(curve, steps, cfg).computed_calls,
            "total_calls": 2 * steps,
        })
    os.makedirs(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"), exist_ok=True)
    base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "magcache_schedule")
    path, n = base + ".json", 1
    while os.path.exists(path):  # never overwrite an earlier result
        path, n = f"{base}_{n}.json", n + 1
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
