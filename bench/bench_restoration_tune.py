"""Issue 21, tune half only: many cases per tune picture (any case range and size), with where the true loss area
that was not filled went (review by rule and reason, skipped, not detected) and which rule filled intact paint.

    nice -n 10 python bench/bench_restoration_tune.py --cases 0 8 --max-side 256 --out bench/results/X.json
    nice -n 10 python bench/bench_restoration_tune.py --cases 8 40 --given-only --out ...

Refuses held-out pictures (bench/restoration_split.json): the detector is chosen on the tune half only.
"""
import argparse
import json
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]


def case(name, k, max_side, given_only=False, sets=None):
    """evaluate_case's figures plus the breakdown of the unfilled true loss area and of the intact fill."""
    from restoration.benchgen import draw_case
    from restoration.realbench import _near, case_seed, evaluate_case, picture
    if given_only and draw_case(picture(name, max_side), case_seed(name, k))[2]["given_ground"] is None:
        return None
    cfg = None
    if sets:
        from restoration.detect import DetectConfig
        cfg = DetectConfig(**sets)
    s, arr = evaluate_case(name, k, detect_cfg=cfg, max_side=max_side, keep=True)
    table, evidence, params = arr["table"], arr["evidence"], arr["params"]
    lab, gt = table.labels, arr["gt"]
    gl = gt["loss"]
    intact = ~_near(gt["loss"] | gt["craquelure"] | gt["scratch"], 1)
    tot = max(int(gl.sum()), 1)
    fp = table.footprint("fill")
    near_fill = _near(fp, 1)
    miss, bad = {}, {}
    from restoration.detect import EVIDENCE
    for r in table.rows:
        m = lab == r["id"]
        lost = int((m & gl & ~near_fill).sum())
        key = r["fill_decision"] + ":" + r["rule"]
        if lost and r["fill_decision"] != "fill":
            miss[key] = miss.get(key, 0) + lost
            if r["fill_decision"] == "review":
                bits = int(evidence[m].max()) if m.any() else 0
                for nm, b in EVIDENCE.items():
                    if bits & b and nm != "ground_confirmed":
                        miss["why:" + nm] = miss.get("why:" + nm, 0) + lost
        if r["fill_decision"] == "fill":
            ii = int((m & intact).sum())
            if ii:
                bad[r["rule"]] = bad.get(r["rule"], 0) + ii
    undet = int((gl & ~_near(np.isin(lab, [r["id"] for r in table.rows]), 1)).sum())
    s["unfilled_by"] = {k_: round(v / tot, 4) for k_, v in sorted(miss.items(), key=lambda t: -t[1])}
    s["unfilled_by"]["not_in_a_region"] = round(undet / tot, 4)
    s["intact_by_rule_px"] = bad
    import torch
    from restoration.color import ciede2000, rgb_to_lab
    true_lab = rgb_to_lab(torch.tensor(s["ground_true"], dtype=torch.float64))
    s["grounds"] = [{**{k_: g.get(k_) for k_ in ("source", "support", "spread_de", "role", "confirmed_by", "ambiguous",
                                                 "plausible", "explains_regions", "losses_agree", "match_de", "match_ref_de",
                                                 "noise_L", "noise_ref_L", "explains_mm2")},
                     "rgb": [round(v, 3) for v in g["rgb"]],
                     "de_true": round(float(ciede2000(torch.tensor(g["lab"], dtype=torch.float64), true_lab)), 2)}
                    for g in params["grounds"]]
    return s


def summary(per):
    v = list(per.values())
    it = [c["intact_share_of_fill"] for c in v]
    rc = [c["loss_recall_area"] for c in v]
    fl = [c["loss_filled_area"] for c in v]
    return {"cases": len(v), "intact_above_5pct": sum(x > 0.05 for x in it), "intact_worst": max(it),
            "intact_mean": round(float(np.mean(it)), 4), "recall_below_0.90": sum(x < 0.9 for x in rc),
            "recall_worst": min(rc), "recall_mean": round(float(np.mean(rc)), 4),
            "filled_below_0.80": sum(x < 0.8 for x in fl), "filled_worst": min(fl),
            "filled_mean": round(float(np.mean(fl)), 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, nargs=2, default=(0, 8), help="case range [a, b)")
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--given-only", action="store_true")
    ap.add_argument("--pictures", nargs="*")
    ap.add_argument("--out")
    ap.add_argument("--note", default="")
    ap.add_argument("--set", nargs="*", default=[], help="DetectConfig overrides key=value (trials)")
    args = ap.parse_args()
    import cv2
    import torch
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from restoration.realbench import load_split
    split = load_split()
    names = args.pictures or split["tune"]
    held = sorted(set(names) - set(split["tune"]))
    if held:
        sys.exit(f"not tune pictures: {held} (the held-out half is run only by bench_restoration_split.py)")
    sets = {kv.split("=")[0]: json.loads(kv.split("=", 1)[1]) for kv in args.set}
    per, t0 = {}, time.perf_counter()
    for name in names:
        for k in range(*args.cases):
            s = case(name, k, args.max_side, args.given_only, sets)
            if s is None:
                continue
            per[f"{name}/{k}"] = s
            flag = ("I" if s["intact_share_of_fill"] > 0.05 else " ") + ("F" if s["loss_filled_area"] < 0.8 else " ")
            print(f"{flag} {name}/{k}".ljust(24) + f"intact={s['intact_share_of_fill']:.4f} recall={s['loss_recall_area']:.4f} "
                  f"filled={s['loss_filled_area']:.4f} given={s['given_ground']} "
                  + " ".join(f"{a}={b}" for a, b in list(s["unfilled_by"].items())[:6]), flush=True)
    doc = {"bench": "issue 21 tune half (restoration.realbench.evaluate_case, default settings, one thread)",
           "note": args.note, "cases": list(args.cases), "max_side_px": args.max_side, "given_only": args.given_only,
           "summary": summary(per), "per_case": per, "wall_s": round(time.perf_counter() - t0, 1),
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(json.dumps(doc["summary"]))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
