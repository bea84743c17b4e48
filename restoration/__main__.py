"""Command line (run from the repo root):

    python -m restoration SCAN --dpi 600 --out DIR [options]
    python -m restoration --sample --out DIR
    python -m restoration --replay RECORD_DIR [SCAN] --out DIR

Writes every artefact (damage map, region table, fill, print layers at 1:1, PDF, previews,
manifest.json and index.html) to DIR, with a progress bar on stderr and a summary on stdout. DIR must
not hold anything yet: the job is written into a hidden folder beside it and moved to DIR when
complete, so an error or Ctrl-C (exit status 130, one line at any point) leaves a complete record or nothing
new (after the move, the line says the record is complete). Before anything is read DIR is claimed
(:class:`~restoration.fileio.OutputClaim`, ``.DIR.lock`` beside it): a second run into it is refused at
once; a rejected input leaves no folder, not even the parents this run made. Options are
checked before any work starts (exit status 2 with one line naming the problem); their defaults and bounds
are those of the nodes' widgets (one table, :mod:`restoration.settings`). A scan with nothing
to fill is a normal result.

Review before print: by default only confident losses and small defects are filled; large regions
(``--max-fill-mm2``, ``--max-fill-share``) and unsure ones (``--min-confidence``) are listed for review
(regions.csv, the fill preview, index.html) and filled only when accepted: ``--accept 3,7,12`` or
``--accept-mask PNG`` (every region the white pixels touch); ``--reject`` / ``--reject-mask`` leave
regions unfilled. Region ids are those of the record's regions.csv of the same scan and settings.

``--replay`` regenerates a record made by this command: every manifest field it reads is checked first
(:mod:`restoration.recordcheck`, one line naming the field); it checks the scan against the recorded
SHA-256, reruns with the recorded parameters, user masks and accepted/rejected region ids, and compares the new print files with
the recorded hashes (exit status 0 only if every one is identical).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, TYPE_CHECKING
import argparse
import json
import sys
import time

try:
    from ..atelier_ray import StatusLine, add_ray_arguments  # type: ignore[import-not-found]
except ImportError:   # the core as a top-level package (CLI from the repository root)
    from atelier_ray import StatusLine, add_ray_arguments

if TYPE_CHECKING:
    from .pipeline import PipelineConfig

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class UsageError(ValueError):
    """A bad command line (argparse's message); :func:`main` prints it as one line and exits 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


class ProgressLine(StatusLine):
    """The progress bar on stderr (``cb(stage_index, n_stages, name, frac)``); ``close()`` ends the line so
    that a message printed afterwards starts on a line of its own."""

    def __init__(self, stream=None, width=30):
        self.stream, self.width, self.open = stream or sys.stderr, width, False

    def __call__(self, stage_i, n, name, frac):
        done = (stage_i + frac) / n
        fill = int(done * self.width)
        self.open = True  # before writing: an interrupt during the write still ends the line
        self.stream.write(f"\r[{'#' * fill}{'.' * (self.width - fill)}] {done * 100:5.1f}% {name:<10}")
        if stage_i == n - 1 and frac >= 1:
            self.close()
        self.stream.flush()


#: the detection thresholds a user may set (Damage Detect's widgets)
THRESHOLDS = ("ground_tolerance_de", "crack_low", "crack_high", "light_low", "light_high", "ground_seed_de", "ground_grow_de",
              "loss_contrast_de", "split_min_length_mm")
#: the settings records the command line exposes (flags, defaults, bounds and help from the records)
CLI_SETTINGS = ("dpi", "seed", "ground_color", *THRESHOLDS, "accept_ids", "reject_ids", "min_confidence",
                "large_min_confidence",
                "max_fill_mm2", "max_fill_share", "grow_px", "count_q", "white_mode", "amount_mm", "min_feature_mm",
                "margin_mm", "mirror", "tile", "fill_workers")


def build_parser() -> argparse.ArgumentParser:
    """The command line; the settings' flags come from :data:`restoration.settings.SETTINGS`."""
    from .classes import CLASS_IDS, DEFAULT_FILL_CLASSES
    from .settings import CLI_FILL_METHODS, SETTINGS as S
    ap = _Parser(prog="python -m restoration", description=__doc__,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scan", nargs="*", help="PNG or TIFF (8/16-bit) scan; JPEG is read but flagged lossy in the record. "
                    "Several scans, a folder, a glob or @list.txt make a collection: DIR/NAME/ per scan and "
                    "DIR/index.csv + index.html (restoration/batch.py)")
    ap.add_argument("--sample", action="store_true", help="run the bundled procedural sample (no data needed)")
    ap.add_argument("--replay", default=None, metavar="RECORD",
                    help="record folder (or its manifest.json) to regenerate; SCAN defaults to the recorded path")
    ap.add_argument("--out", required=True, help="output folder (must not exist yet, or be empty)")
    # --dpi: None = from the file's metadata (the sample: the record's default); --ground: None = auto
    S.add_arguments(ap, CLI_SETTINGS, defaults={"dpi": None, "ground_color": None})
    w, h = S["width"], S["height"]
    ap.add_argument("--size", default=f"{w.default}x{h.default}",
                    help=f"sample size WxH in px, each side {w.min}..{w.max} (default {w.default}x{h.default} = "
                         "65 x 43 mm at 600 dpi)")
    ap.add_argument("--mask-add", default=None, help="user-painted mask to add (PNG, white = damage)")
    ap.add_argument("--mask-remove", default=None, help="user-painted mask of false detections to remove")
    ap.add_argument("--accept-mask", default=None, metavar="PNG",
                    help="mask (white) naming regions to accept: every region it touches is accepted")
    ap.add_argument("--reject-mask", default=None, metavar="PNG", help="mask (white) naming regions to reject")
    ap.add_argument("--capture", default=None, help="capture with the mask applied, for the registration check")
    m = S["method"]
    ap.add_argument(m.flag, dest="fill", default=m.default, choices=CLI_FILL_METHODS,
                    help=m.help.rsplit("; external", 1)[0] + " (external: in the nodes only)")
    ap.add_argument("--fill-classes", default=",".join(DEFAULT_FILL_CLASSES),
                    help=f"comma list from {sorted(CLASS_IDS)}")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: the work is per-tile elementwise maths and OpenCV, which "
                         "gains little from torch threads and loses a lot on a busy machine; 0 = torch default)")
    add_ray_arguments(ap, "a collection's scans")
    return ap


def config_from_args(args: argparse.Namespace) -> "PipelineConfig":
    """The :class:`PipelineConfig` of the command line, validated (before anything is read or written).
    Every flag of a setting was checked by its record when it was parsed; here the rules beyond one
    setting (the ground colour's syntax, a tile of 0 or >= 64, ids named twice)."""
    from .pipeline import PipelineConfig
    from .review import ReviewConfig
    from .stages import check_review, detect_config
    fill_classes = tuple(c.strip() for c in args.fill_classes.split(",") if c.strip())
    det = detect_config(args.ground_color or "auto", args.tile, **{k: getattr(args, k) for k in THRESHOLDS})
    rev = ReviewConfig(min_confidence=args.min_confidence, max_fill_mm2=args.max_fill_mm2,
                       max_fill_share=args.max_fill_share, large_min_confidence=args.large_min_confidence)
    check_review(rev, args.accept_ids, args.reject_ids, ("--accept", "--reject"))
    return PipelineConfig(detect=det, fill_classes=fill_classes, review=rev, fill_method=args.fill,
                          grow_px=args.grow_px, count_q=args.count_q, white_mode=args.white_mode,
                          white_amount_mm=args.amount_mm, min_feature_mm=args.min_feature_mm,
                          margin_mm=args.margin_mm, mirror=args.mirror, tile=args.tile)


class Outcome:
    """Where a run stands, for the one line an interrupt prints: ``claimed`` is the output folder once this
    run holds it (:class:`~restoration.fileio.OutputClaim`: it was new or empty then, and only this run's
    staged folder, moved in whole, can fill it)."""

    def __init__(self) -> None:
        self.claimed: Optional[str] = None

    @property
    def complete(self) -> Optional[str]:
        """The output folder when this run's record is in place (its manifest.json exists), else None."""
        import os
        c = self.claimed
        return c if c is not None and os.path.isfile(os.path.join(c, "manifest.json")) else None


def main(argv: Optional[list] = None) -> int:
    """The command line; every way out is one line on stderr (usage, bad input, Ctrl-C), never a traceback."""
    bar = ProgressLine()
    outcome = Outcome()
    out = None
    try:
        ap = build_parser()
        try:
            args = ap.parse_args(argv)
            out = args.out
            from .batch import is_collection
            if is_collection(args):
                return _collection(args)
            args.scan = args.scan[0] if args.scan else None
            if args.replay is None and bool(args.scan) == bool(args.sample):
                ap.error("give either SCAN or --sample")
            if args.replay is not None and args.sample:
                ap.error("--replay and --sample exclude each other")
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if args.threads > 0:
            import torch
            torch.set_num_threads(args.threads)
        try:
            if args.replay is not None:
                return replay_cli(args, bar, outcome=outcome)
            manifest = run_cli(args, bar, outcome=outcome)
        except ValueError as exc:
            bar.close()
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(json.dumps(_summary(manifest, args.out), indent=1))
        return 0
    except KeyboardInterrupt:
        bar.close()
        if outcome.complete is not None:
            print(f"interrupted: the record in {outcome.complete} is complete (only the summary was cut short)",
                  file=sys.stderr)
        else:
            print(f"interrupted: nothing new was written{'' if out is None else ' to ' + str(out)}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _collection(args: argparse.Namespace) -> int:
    """Many scans (``restoration/batch.py``); a bad option or input list is one line, exit 2."""
    from .batch import collection_main
    if args.threads < 0 or args.workers < 0 or args.ray_cpus <= 0:
        print("error: --threads and --workers must be >= 0, --ray-cpus > 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        return collection_main(args, config_from_args, _one_record)
    except ValueError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\ninterrupted: the records completed in {args.out} are kept (each whole); run the same command "
              "again to do the rest", file=sys.stderr)
        return EXIT_INTERRUPTED


def fill_workers(args: argparse.Namespace) -> int:
    """The exemplar fill's workers for this run: ``--fill-workers``; its 0 (one per CPU) becomes the CPUs of one
    Ray worker (``--ray-cpus``) when a collection is spread over Ray, whose workers share the machines."""
    n = int(getattr(args, "fill_workers", 0) or 0)
    if n == 0 and getattr(args, "ray", None) is not None:
        n = max(1, int(getattr(args, "ray_cpus", 1)))
    return n


def _one_record(args: argparse.Namespace, cfg: "PipelineConfig") -> dict:
    """One scan of a collection: its record staged into ``args.out`` (the collection holds the lock)."""
    return _run_claimed(args, cfg, None, None)


def _summary(manifest: Mapping[str, Any], out: str) -> dict:
    """The summary printed on stdout after a run."""
    st = manifest["stats"]
    summary = {k: st[k] for k in ("n_regions", "n_regions_filled", "n_regions_for_review", "n_regions_skipped_by_reason",
                                  "total_fill_area_mm2", "count_rgb8", "count_dE1")}
    if manifest.get("review"):
        summary["for_review_ids"] = manifest["review"]["for_review"][:50]
    summary["wallclock_s_total"] = round(sum(st["wallclock_s"].values()), 2)
    if "sample_metrics" in manifest:
        sm = manifest["sample_metrics"]
        summary["detection_f1"] = {k: v["f1"] for k, v in sm["detection"].items()}
        summary["fill_dE00_mean"] = sm["fill"].get("dE00_mean")
    if manifest["capture"].get("lossy"):
        summary["warning"] = f"the scan is {manifest['capture'].get('format')} (lossy compression); flagged in the record"
    summary["record"] = f"{out}/index.html"
    return summary


def _sample_size(text: str) -> tuple:
    """``WxH`` -> ``(width, height)``, each side checked by its record (``width`` / ``height``)."""
    from .settings import SETTINGS
    try:
        sw, sh = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must be WxH, got {text!r}") from None
    return SETTINGS["width"].check(sw), SETTINGS["height"].check(sh)


def run_cli(args: argparse.Namespace, progress: Optional[Callable[..., None]] = None,
            outcome: Optional[Outcome] = None) -> dict:
    """The job of the command line: options checked, the output folder claimed (a second run into it is
    refused before it reads anything), the inputs read, the job written into a staged folder moved into
    place when complete. ``outcome.claimed`` is set once the folder is held."""
    from .fileio import OutputClaim
    cfg = config_from_args(args)  # every option is checked before anything is read, written or detected
    size = _sample_size(args.size) if args.sample else None
    with OutputClaim(args.out):
        if outcome is not None:
            outcome.claimed = str(args.out)
        manifest = _run_claimed(args, cfg, size, progress)
    return manifest


def _run_claimed(args: argparse.Namespace, cfg: "PipelineConfig", size: Optional[tuple],
                 progress: Optional[Callable[..., None]]) -> dict:
    import numpy as np
    from .fileio import StagedFolder, write_png, write_tiff, to_uint
    from .pipeline import run
    from .scanio import read_scan
    from .settings import SETTINGS
    extra, capture, user_add, user_remove = {}, None, None, None
    if size is not None:
        sw, sh = size
        dpi = SETTINGS["dpi"].default if args.dpi is None else args.dpi
    else:
        img, dpi, scan_info = read_scan(args.scan, args.dpi, getattr(args, "scan_shown", None))
        if args.capture:
            capture, _, _ = read_scan(args.capture, dpi)
    masks = {}
    for name in ("mask_add", "mask_remove", "accept_mask", "reject_mask"):
        path = getattr(args, name)
        if path:
            m, _, _ = read_scan(path, dpi)
            masks[name] = m.mean(2) > 0.5
    user_add, user_remove = masks.get("mask_add"), masks.get("mask_remove")
    with StagedFolder(args.out) as out:
        if args.sample:
            from dataclasses import replace
            from .synth import SynthConfig, make_sample
            t0 = time.perf_counter()
            img, clean, gt, info = make_sample(SynthConfig(width=sw, height=sh, dpi=dpi), args.seed)
            if cfg.detect.ground_rgb is None:
                cfg = replace(cfg, detect=replace(cfg.detect, ground_rgb=tuple(info["ground_rgb"])))
            p = write_tiff(out, "sample_scan.tif", to_uint(img, 16), dpi)
            img, _, sinfo = read_scan(p, dpi)  # process the file as recorded (16-bit), so the record can be replayed
            write_png(out, "sample_clean.png", to_uint(clean, 8), dpi)
            write_png(out, "sample_ground_truth_classes.png", gt, dpi)
            scan_info = {"path": p.name, "name": p.name, "sha256": sinfo["sha256"], "bits": 16, "format": "TIFF",
                         "dpi_source": "sample", "seeds": {"sample": args.seed}}
            # a simulated capture of the painting with the film applied, shifted 2 px right, 1 px down
            import cv2
            capture = cv2.warpAffine(clean, np.array([[1, 0, 2], [0, 1, 1]], np.float32), (clean.shape[1], clean.shape[0]),
                                     flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            extra["sample"] = {"seed": args.seed, "generator_s": round(time.perf_counter() - t0, 3),
                               "simulated_capture_shift_px": [2.0, 1.0]}
        manifest = run(img, dpi, out, cfg, scan_info=scan_info, user_add=user_add, user_remove=user_remove,
                       extra=extra, progress=progress, capture=capture, fill_workers=fill_workers(args),
                       **review_choice(args, masks))
        if args.sample:
            manifest = _sample_metrics(out, manifest, img, clean, gt, args)
    return manifest


def review_choice(args: argparse.Namespace, masks: Mapping[str, Any]) -> dict:
    """The review options as :func:`restoration.pipeline.run` takes them (the ids are resolved there, by
    :func:`restoration.stages.review_ids`, with the options' names in its messages)."""
    return {"accept": args.accept_ids, "reject": args.reject_ids, "accept_mask": masks.get("accept_mask"),
            "reject_mask": masks.get("reject_mask"),
            "review_names": ("--accept", "--reject", "--accept-mask", "--reject-mask")}


def _sample_metrics(out, manifest, img, clean, gt, args):
    import numpy as np
    from PIL import Image
    from .fileio import write_bytes
    from .fill import fill_image
    from .metrics import detection_scores, fill_scores
    with Image.open(out / "damage_classes.png") as im:
        pred = np.asarray(im)
    filled_gt, _ = fill_image(img, gt > 0, args.fill, tile=args.tile)
    metrics = {"detection": detection_scores(pred, gt),
               "fill": fill_scores(filled_gt, clean, gt > 0, damaged=img),
               "note": "detection: 1 px tolerance; fill: the method run on the ground-truth mask, dE00 vs the clean image"}
    write_bytes(out, "sample_metrics.json", json.dumps(metrics, indent=1))
    return dict(manifest, sample_metrics=metrics)


REPLAY_ROLES = ("color_layer", "white_layer", "print_pdf", "fill_full", "labels", "classes")


def replay_cli(args: argparse.Namespace, progress: Optional[Callable[..., None]] = None,
               outcome: Optional[Outcome] = None) -> int:
    """Regenerate a CLI-made record; print the per-file comparison; 0 if all print files are identical.
    Every field of the manifest a replay reads is checked first (:mod:`restoration.recordcheck`), then the
    output folder is claimed, then the scan is read."""
    import pathlib
    from .fileio import OutputClaim, StagedFolder
    from .pipeline import run
    from .record import load_manifest
    from .recordcheck import check_manifest
    from .scanio import read_scan
    man, rdir = load_manifest(args.replay)
    spec = check_manifest(man, rdir)
    files = spec.files
    if not any(r in files for r in REPLAY_ROLES):
        raise ValueError(f"record {str(rdir)!r} lists none of the files a replay compares ({', '.join(REPLAY_ROLES)})")
    for k in ("add", "remove"):
        if spec.user_mask.get(k) and f"user_mask_{k}" not in files:
            raise ValueError(f"the record used a user '{k}' mask but does not contain user_mask_{k}.png")
    if spec.generative and "fill_full" not in files:
        raise ValueError("the record's fill is generative but fill_full.tif is not listed")
    scan = args.scan or spec.scan
    if not scan:
        raise ValueError("the record names no scan; give SCAN")
    with OutputClaim(args.out):
        if outcome is not None:
            outcome.claimed = str(args.out)
        sp = pathlib.Path(scan)
        if not sp.is_absolute() and not sp.exists():
            sp = rdir / sp  # the sample's scan is stored in the record folder
        img, dpi, info = read_scan(sp, spec.ppi)
        if spec.sha256 and info["sha256"] != spec.sha256:
            raise ValueError(f"scan {str(sp)!r} has sha256 {info['sha256'][:16]}..., the record's scan has "
                             f"{spec.sha256[:16]}...: not the same file")
        masks = {}
        for k in ("add", "remove"):
            f = files.get(f"user_mask_{k}")
            if f is not None:
                m, _, _ = read_scan(rdir / f["path"], dpi)
                masks[k] = m.mean(2) > 0.5
        external = None
        if spec.generative:
            external, _, _ = read_scan(rdir / files["fill_full"]["path"], dpi)  # the recorded composite
        info.update(dpi_source="record", seeds=dict(spec.seeds))
        replayed = {"manifest": str((rdir / "manifest.json").resolve()), "created_utc": spec.created_utc}
        with StagedFolder(args.out) as out:
            new = run(img, dpi, out, spec.config, scan_info=info, user_add=masks.get("add"),
                      user_remove=masks.get("remove"), external_fill=external, accept=spec.accepted,
                      reject=spec.rejected, extra={"replayed_from": replayed}, progress=progress,
                      fill_workers=fill_workers(args))
    got = {f.get("role"): f for f in new["files"]}
    report, same = [], True
    for role in REPLAY_ROLES:
        if role not in files:
            continue
        a, b = files[role]["sha256"], got.get(role, {}).get("sha256")
        same &= a == b
        report.append({"role": role, "file": files[role]["path"], "identical": a == b})
    print(json.dumps({"replay_of": str(rdir / "manifest.json"), "identical": same, "files": report}, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
