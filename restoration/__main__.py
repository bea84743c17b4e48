"""Command line (run from the repo root):

    python -m restoration SCAN --dpi 600 --out DIR [options]
    python -m restoration --sample --out DIR
    python -m restoration --replay RECORD_DIR [SCAN] --out DIR

Writes every artefact (damage map, region table, fill, print layers at 1:1, PDF, previews,
manifest.json and index.html) to DIR, with a progress bar on stderr and a summary on stdout.

``--replay`` regenerates a record made by this command: it checks the scan against the recorded
SHA-256, reruns with the recorded parameters and user masks, and compares the new print files with
the recorded hashes (exit status 0 only if every one is identical).
"""
import argparse
import json
import sys
import time


def _bar(stage_i, n, name, frac):
    done = (stage_i + frac) / n
    width = 30
    fill = int(done * width)
    sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done * 100:5.1f}% {name:<10}")
    if stage_i == n - 1 and frac >= 1:
        sys.stderr.write("\n")
    sys.stderr.flush()


def main(argv=None):
    from .classes import CLASS_IDS
    ap = argparse.ArgumentParser(prog="python -m restoration", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scan", nargs="?", help="PNG or TIFF (8/16-bit) scan")
    ap.add_argument("--sample", action="store_true", help="run the bundled procedural sample (no data needed)")
    ap.add_argument("--replay", default=None, metavar="RECORD",
                    help="record folder (or its manifest.json) to regenerate; SCAN defaults to the recorded path")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--dpi", type=float, default=None, help="scan resolution; default: from the file's metadata")
    ap.add_argument("--seed", type=int, default=0, help="sample seed")
    ap.add_argument("--size", default="1536x1024", help="sample size WxH in px (default 1536x1024 = 65 x 43 mm at 600 dpi)")
    ap.add_argument("--ground", default=None, help="ground colour R,G,B in 0..1 (default: auto)")
    ap.add_argument("--mask-add", default=None, help="user-painted mask to add (PNG, white = damage)")
    ap.add_argument("--mask-remove", default=None, help="user-painted mask of false detections to remove")
    ap.add_argument("--capture", default=None, help="capture with the mask applied, for the registration check")
    ap.add_argument("--fill", default="harmonic", choices=("harmonic", "telea", "ns", "patch"),
                    help="harmonic (default), OpenCV telea/ns, patch (copies matching texture from nearby)")
    ap.add_argument("--white-mode", default="same_pattern",
                    choices=("same_pattern", "choke", "spread", "minimal_white", "none"))
    ap.add_argument("--white-amount-mm", type=float, default=0.0, help="choke/spread distance")
    ap.add_argument("--no-mirror", action="store_true", help="do not mirror the print layers")
    ap.add_argument("--fill-classes", default="loss,small_defect,user",
                    help=f"comma list from {sorted(CLASS_IDS)}")
    ap.add_argument("--tile", type=int, default=1024, help="tile size in px (0 = untiled)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: the work is per-tile elementwise maths and OpenCV, which "
                         "gains little from torch threads and loses a lot on a busy machine; 0 = torch default)")
    args = ap.parse_args(argv)
    if args.replay is None and bool(args.scan) == bool(args.sample):
        ap.error("give either SCAN or --sample")
    if args.replay is not None and args.sample:
        ap.error("--replay and --sample exclude each other")
    if args.threads > 0:
        import torch
        torch.set_num_threads(args.threads)
    try:
        if args.replay is not None:
            return replay_cli(args)
        manifest = run_cli(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    st = manifest["stats"]
    summary = {k: st[k] for k in ("n_regions", "n_regions_filled", "n_regions_skipped_by_reason",
                                  "total_fill_area_mm2", "count_rgb8", "count_dE1")}
    summary["wallclock_s_total"] = round(sum(st["wallclock_s"].values()), 2)
    if "sample_metrics" in manifest:
        sm = manifest["sample_metrics"]
        summary["detection_f1"] = {k: v["f1"] for k, v in sm["detection"].items()}
        summary["fill_dE00_mean"] = sm["fill"]["dE00_mean"]
    summary["record"] = f"{args.out}/index.html"
    print(json.dumps(summary, indent=1))
    return 0


def run_cli(args):
    import numpy as np
    from .detect import DetectConfig
    from .pipeline import PipelineConfig, run
    from .scanio import prepare_out_dir, read_scan, to_uint, write_png, write_tiff
    out = prepare_out_dir(args.out)
    fill_classes = tuple(c.strip() for c in args.fill_classes.split(",") if c.strip())
    ground = tuple(float(v) for v in args.ground.split(",")) if args.ground else None
    if ground is not None and len(ground) != 3:
        raise ValueError(f"--ground must be R,G,B, got {args.ground!r}")
    extra, capture, user_add, user_remove = {}, None, None, None
    if args.sample:
        from .synth import SynthConfig, make_sample
        t0 = time.perf_counter()
        dpi = args.dpi or 600.0
        try:
            sw, sh = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise ValueError(f"--size must be WxH, got {args.size!r}") from None
        if not (64 <= sw <= 20000 and 64 <= sh <= 20000):
            raise ValueError(f"--size {args.size} out of range 64..20000 px per side")
        img, clean, gt, info = make_sample(SynthConfig(width=sw, height=sh, dpi=dpi), args.seed)
        ground = ground or tuple(info["ground_rgb"])
        p = write_tiff(out, "sample_scan.tif", to_uint(img, 16), dpi)
        img, _, sinfo = read_scan(p, dpi)  # process the file as recorded (16-bit), so the record can be replayed
        write_png(out, "sample_clean.png", to_uint(clean, 8), dpi)
        write_png(out, "sample_ground_truth_classes.png", gt, dpi)
        scan_info = {"path": p.name, "sha256": sinfo["sha256"], "bits": 16, "dpi_source": "sample",
                     "seeds": {"sample": args.seed}}
        # a simulated capture of the painting with the film applied, shifted 2 px right, 1 px down
        import cv2
        capture = cv2.warpAffine(clean, np.float32([[1, 0, 2], [0, 1, 1]]), (clean.shape[1], clean.shape[0]),
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        extra["sample"] = {"seed": args.seed, "generator_s": round(time.perf_counter() - t0, 3),
                           "simulated_capture_shift_px": [2.0, 1.0]}
    else:
        img, dpi, scan_info = read_scan(args.scan, args.dpi)
        if args.capture:
            capture, _, _ = read_scan(args.capture, dpi)
    for name in ("mask_add", "mask_remove"):
        path = getattr(args, name)
        if path:
            m, _, _ = read_scan(path, dpi)
            if name == "mask_add":
                user_add = m.mean(2) > 0.5
            else:
                user_remove = m.mean(2) > 0.5
    cfg = PipelineConfig(detect=DetectConfig(ground_rgb=ground, tile=args.tile), fill_classes=fill_classes,
                         fill_method=args.fill, white_mode=args.white_mode, white_amount_mm=args.white_amount_mm,
                         mirror=not args.no_mirror, tile=args.tile)
    manifest = run(img, dpi, out, cfg, scan_info=scan_info, user_add=user_add, user_remove=user_remove,
                   extra=extra, progress=_bar, capture=capture)
    if args.sample:
        import json as _json
        from .metrics import detection_scores, fill_scores
        from .fill import fill_image
        from .scanio import write_bytes
        pred = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / "damage_classes.png"))
        filled_gt, _ = fill_image(img, gt > 0, args.fill, tile=args.tile)
        metrics = {"detection": detection_scores(pred, gt),
                   "fill": fill_scores(filled_gt, clean, gt > 0, damaged=img),
                   "note": "detection: 1 px tolerance; fill: the method run on the ground-truth mask, dE00 vs the clean image"}
        write_bytes(out, "sample_metrics.json", _json.dumps(metrics, indent=1))
        manifest["sample_metrics"] = metrics
    return manifest


REPLAY_ROLES = ("color_layer", "white_layer", "print_pdf", "fill_full", "labels", "classes")


def replay_cli(args):
    """Regenerate a CLI-made record; print the per-file comparison; 0 if all print files are identical."""
    import pathlib
    from .pipeline import config_from_dict, run
    from .scanio import read_scan
    rec = pathlib.Path(args.replay)
    mpath = rec / "manifest.json" if rec.is_dir() else rec
    try:
        man = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--replay {str(args.replay)!r}: no readable manifest.json ({exc})") from None
    rdir = mpath.parent
    conf = man.get("processing", {}).get("config") or {}
    if conf.get("source") == "ComfyUI nodes":
        raise ValueError("this record was made in ComfyUI: load its workflow.json in ComfyUI to reproduce it")
    cfg = config_from_dict(conf)
    cap = man.get("capture", {})
    scan = args.scan or cap.get("path")
    if not scan:
        raise ValueError("the record names no scan; give SCAN")
    sp = pathlib.Path(scan)
    if not sp.is_absolute() and not sp.exists():
        sp = rdir / sp  # the sample's scan is stored in the record folder
    img, dpi, info = read_scan(sp, cap.get("ppi"))
    if cap.get("sha256") and info["sha256"] != cap["sha256"]:
        raise ValueError(f"scan {str(sp)!r} has sha256 {info['sha256'][:16]}..., the record's scan has "
                         f"{cap['sha256'][:16]}...: not the same file")
    files = {f.get("role"): f for f in man.get("files", [])}
    masks = {}
    for k in ("add", "remove"):
        f = files.get(f"user_mask_{k}")
        if f is not None:
            m, _, _ = read_scan(rdir / f["path"], dpi)
            masks[k] = m.mean(2) > 0.5
        elif man.get("processing", {}).get("user_mask", {}).get(k):
            raise ValueError(f"the record used a user '{k}' mask but does not contain user_mask_{k}.png")
    external = None
    if man.get("generative"):
        external, _, _ = read_scan(rdir / files["fill_full"]["path"], dpi)  # the recorded composite
    info.update(dpi_source="record", seeds=man.get("processing", {}).get("seeds", {}))
    new = run(img, dpi, args.out, cfg, scan_info=info, user_add=masks.get("add"), user_remove=masks.get("remove"),
              external_fill=external, extra={"replayed_from": {"manifest": str(mpath.resolve()),
                                                               "created_utc": man.get("created_utc")}},
              progress=_bar)
    got = {f.get("role"): f for f in new["files"]}
    report, same = [], True
    for role in REPLAY_ROLES:
        if role not in files:
            continue
        a, b = files[role]["sha256"], got.get(role, {}).get("sha256")
        same &= a == b
        report.append({"role": role, "file": files[role]["path"], "identical": a == b})
    print(json.dumps({"replay_of": str(mpath), "identical": same, "files": report}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
