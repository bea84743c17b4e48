"""A collection of scans in one run: ``python -m restoration SCANS... --out DIR [--ray [ADDRESS]]``.

SCANS are files, folders (their PNG/TIFF/JPEG files), globs or ``@list.txt`` (:func:`atelier_ray.expand_inputs`).
DIR is the collection folder: each scan's record goes to ``DIR/NAME/`` (NAME the scan's file stem; two scans of
one stem get ``-`` and 6 hex digits of their path's hash), written as one scan's record always is (a hidden
staged folder renamed into place when complete), and ``DIR/index.csv`` and ``DIR/index.html`` list every scan
of the run: its record, the damage and fill areas in mm^2, the regions filled and waiting for review, or the
reason it failed, sorted by the damage area (the area needing treatment) largest first; the HTML table sorts
by any column. A scan that fails is listed with its reason and the others go on (exit status 1 then).

Nothing is written over an earlier record: a ``DIR/NAME`` that holds the record of the same scan (its
manifest's SHA-256) is kept and listed as ``done earlier`` (a rerun of an interrupted collection does only
what is missing); one that holds another scan's record fails that scan with the reason. The collection is
held by ``DIR/.collection.lock`` for the run (a second run into it is refused). Settings are the single-scan
flags, the same for every scan; the per-scan inputs (masks, accept/reject ids, capture) are refused here.

With ``--ray`` the scans are spread over Ray actors (one per CPU slot; :func:`atelier_ray.run_batch`): a lost
worker's scan is run again elsewhere. No file system is shared with the workers: the driver reads each scan's
bytes and sends them (:class:`ShippedScan`; a record already in place is checked here and not sent), the worker
writes the record into a folder of its own and returns its files, and the driver writes them staged and
renamed into place (:func:`land_record`), once: an attempt whose worker was declared lost never lands. The
record is the one the scan gives in this process, byte for byte (the worker's messages and the record name
the driver's path of the scan).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import html
import io
import json
import os
import pathlib
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

try:
    from ..atelier_ray import (BatchItem, Done, JobProgress, Outcome,  # type: ignore[import-not-found]
                               by_worker, expand_inputs, read_tree, run_batch, write_tree)
except ImportError:   # the core as a top-level package (CLI from the repository root)
    from atelier_ray import (BatchItem, Done, JobProgress, Outcome, by_worker, expand_inputs, read_tree, run_batch,
                             write_tree)

SCAN_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
#: single-scan options a collection refuses (they name one scan's regions or files)
PER_SCAN = {"mask_add": "--mask-add", "mask_remove": "--mask-remove", "accept_mask": "--accept-mask",
            "reject_mask": "--reject-mask", "capture": "--capture", "accept_ids": "--accept",
            "reject_ids": "--reject"}
INDEX_COLUMNS = ("name", "status", "total_damage_area_mm2", "total_fill_area_mm2", "n_regions", "n_regions_filled",
                 "n_regions_for_review", "dpi", "scan", "sha256", "record", "reason")
LOCK = ".collection.lock"


def is_collection(args: argparse.Namespace) -> bool:
    """A run is a collection when it names several scans, a folder, a glob or a list file, or uses --ray."""
    scans = list(args.scan or [])
    if getattr(args, "ray", None) is not None or len(scans) > 1:
        return True
    return any(s.startswith("@") or os.path.isdir(s) or (not os.path.exists(s) and any(c in s for c in "*?["))
               for s in scans)


def check_args(args: argparse.Namespace) -> None:
    """Refuse what a collection cannot take (ValueError naming the option)."""
    if args.sample or args.replay is not None:
        raise ValueError("--sample and --replay take no SCAN list: run them on their own")
    for k, flag in PER_SCAN.items():
        if getattr(args, k, None):
            raise ValueError(f"{flag} names one scan's regions or files; it cannot apply to a collection "
                             "(run that scan on its own)")


def record_names(scans: Sequence[pathlib.Path]) -> List[str]:
    """The record folder name of each scan: its stem, or ``stem-xxxxxx`` (a hash of its absolute path)
    where several scans share a stem, so a name never depends on the order of the list."""
    stems = [s.stem for s in scans]
    return [st if stems.count(st) == 1 else f"{st}-{hashlib.sha1(str(s.resolve()).encode()).hexdigest()[:6]}"
            for st, s in zip(stems, scans)]


def plan(args: argparse.Namespace) -> List[BatchItem]:
    """One item per scan: payload ``(scan path, record folder)``, weight its megapixels (from the header)."""
    scans = expand_inputs(args.scan, SCAN_EXTS)
    out = pathlib.Path(args.out)
    items = []
    for s, name in zip(scans, record_names(scans)):
        items.append(BatchItem(name, (str(s), str(out / name)), _pixels(s) / 1e6))
    return items


def _pixels(path: pathlib.Path) -> int:
    from PIL import Image
    try:
        with Image.open(path) as im:
            return int(im.size[0] * im.size[1])
    except Exception:   # noqa: BLE001 - unreadable: the worker reports why, at once (no weight in the ETA)
        return 0


#: the single-scan job the command line gives (``restoration.__main__``): ``config(args)`` checks the options
#: and returns the job's config, ``job(args, config)`` writes one record (staged) and returns its manifest
ConfigFn = Callable[[argparse.Namespace], Any]
JobFn = Callable[[argparse.Namespace, Any], Dict[str, Any]]


@dataclass(frozen=True)
class ShippedScan:
    """A scan sent to a Ray worker: its path on the driver (``scan``, what the record and messages name), its
    bytes (None: not a file there; the worker reports it as the driver would) and the record folder's name."""
    scan: str
    data: Optional[bytes]
    record: str


def ship_scan(payload: Tuple[str, str], sees: bool = False) -> Any:
    """In the driver, as a scan goes to a Ray worker: :class:`ShippedScan`, or ``Done(row)`` when its record is
    already in place (the same scan's: ``done earlier``; another's: ValueError, that scan's failure). Always
    bytes, whatever the worker sees (``sees``): a scan and its record are small next to the work on them."""
    from .fileio import sha256_file
    scan, dest = payload
    d = pathlib.Path(dest)
    if d.exists() and any(d.iterdir()):
        return Done(_existing(d, scan, sha256_file(scan)))
    p = pathlib.Path(scan)
    return ShippedScan(scan, p.read_bytes() if p.is_file() else None, d.name)


def land_record(payload: Tuple[str, str], result: Dict[str, Any]) -> Dict[str, Any]:
    """In the driver, on a scan's one final result from a Ray worker: its record's files (``result["files"]``)
    written into a staged folder renamed to the record folder (never over one); the index row."""
    from .fileio import StagedFolder
    files = result.get("files")
    if files is None:   # done earlier, found by the worker
        return result
    with StagedFolder(payload[1]) as tmp:
        write_tree(tmp, files)
    return {k: v for k, v in result.items() if k != "files"}


class ScanWorker:
    """``work(payload)`` of a collection: one scan's record through the command line's single-scan job, with
    its settings (each actor builds one; no model to load)."""

    def __init__(self, args: argparse.Namespace, config: ConfigFn, job: JobFn) -> None:
        self.args, self.config, self.job = args, config, job
        if args.threads > 0:   # several workers share a machine's cores: each keeps to its share, OpenCV too
            import cv2
            import torch
            torch.set_num_threads(args.threads)
            cv2.setNumThreads(args.threads)

    def __call__(self, payload: "Tuple[str, str] | ShippedScan") -> Dict[str, Any]:
        from .fileio import sha256_file
        if isinstance(payload, ShippedScan):
            return self._shipped(payload)
        scan, dest = payload
        d = pathlib.Path(dest)
        if d.exists() and any(d.iterdir()):
            return _existing(d, scan, sha256_file(scan))
        a = argparse.Namespace(**{**vars(self.args), "scan": scan, "out": dest})
        try:
            manifest = self.job(a, self.config(a))
        except (OSError, ValueError):
            # another attempt of this scan (a worker declared lost that was still running) put its complete
            # record in place first: before this one was staged (refused) or before its rename (which fails
            # rather than write over it); keep that record, once
            if d.is_dir() and (d / "manifest.json").is_file():
                return dict(_existing(d, scan, sha256_file(scan)), status="done")
            raise
        return dict(_row(manifest, d), status="done")

    def _shipped(self, s: ShippedScan) -> Dict[str, Any]:
        """A scan sent as bytes: read from a local copy, its record made in a folder of this worker's own and
        returned as files (``files``: path in the record -> bytes) with the index row; nothing else is kept."""
        with tempfile.TemporaryDirectory(prefix="atelier-scan-") as t:
            local = pathlib.Path(t) / "in" / pathlib.PurePath(s.scan).name
            local.parent.mkdir()
            if s.data is not None:
                local.write_bytes(s.data)
            d = pathlib.Path(t) / "out" / s.record
            a = argparse.Namespace(**{**vars(self.args), "scan": str(local), "scan_shown": s.scan, "out": str(d)})
            manifest = self.job(a, self.config(a))
            return dict(_row(manifest, d), status="done", files=read_tree(d))


def _existing(d: pathlib.Path, scan: str, sha: str) -> Dict[str, Any]:
    """A record already in place: the same scan's (kept, ``done earlier``) or another's (ValueError)."""
    try:
        manifest = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        raise ValueError(f"{str(d)!r} exists and holds no complete record; records are never overwritten "
                         "(move it away to run this scan)") from None
    if manifest.get("capture", {}).get("sha256") != sha:
        raise ValueError(f"{str(d)!r} holds the record of another scan ({manifest.get('capture', {}).get('file')}); "
                         "records are never overwritten")
    return dict(_row(manifest, d), status="done earlier")


def _row(manifest: Dict[str, Any], d: pathlib.Path) -> Dict[str, Any]:
    st, cap = manifest["stats"], manifest["capture"]
    return {"total_damage_area_mm2": st.get("total_damage_area_mm2"), "total_fill_area_mm2": st["total_fill_area_mm2"],
            "n_regions": st["n_regions"], "n_regions_filled": st["n_regions_filled"],
            "n_regions_for_review": st["n_regions_for_review"], "dpi": cap.get("ppi"), "sha256": cap.get("sha256"),
            "record": f"{d.name}/index.html"}


def index_rows(outcomes: Sequence[Outcome]) -> List[Dict[str, Any]]:
    """One row per scan, largest damage area first, failed scans last (by name)."""
    rows = []
    for o in outcomes:
        scan, dest = o.item.payload
        row: Dict[str, Any] = {"name": o.item.key, "scan": scan}
        if o.ok:
            row.update(o.result)
        else:
            row.update(status="failed", reason=o.error)
        rows.append({k: row.get(k, "") for k in INDEX_COLUMNS})
    return sorted(rows, key=lambda r: (r["status"] == "failed", -(r["total_damage_area_mm2"] or 0), r["name"]))


def index_csv(rows: Sequence[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


_SORT_JS = ("document.querySelectorAll('th').forEach((th,i)=>th.onclick=()=>{const t=th.closest('table'),"
            "b=t.tBodies[0],r=[...b.rows],d=th.dataset.d=th.dataset.d==='1'?'-1':'1',n=v=>v!==''&&!isNaN(v);"
            "r.sort((x,y)=>{const a=x.cells[i].dataset.v,c=y.cells[i].dataset.v;return (n(a)&&n(c)?a-c:"
            "a.localeCompare(c))*d});r.forEach(x=>b.appendChild(x))});")


def index_html(rows: Sequence[Dict[str, Any]], title: str) -> str:
    """The collection index as one HTML page (no external file): a table sortable by any column."""
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in INDEX_COLUMNS if c != "sha256")
    body = []
    for r in rows:
        cells = []
        for c in INDEX_COLUMNS:
            if c == "sha256":
                continue
            v = r[c]
            shown = f'<a href="{e(str(v))}">record</a>' if c == "record" and v else e(str(v))
            cells.append(f'<td data-v="{e(str(v))}">{shown}</td>')
        cls = ' class="failed"' if r["status"] == "failed" else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    n_fail = sum(r["status"] == "failed" for r in rows)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>"
            "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}"
            "th{cursor:pointer;background:#eee}tr.failed{background:#fdd}</style></head><body>"
            f"<h1>{e(title)}</h1><p>{len(rows)} scans, {n_fail} failed. Areas in mm&sup2;; click a column to "
            f"sort.</p><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"<script>{_SORT_JS}</script></body></html>\n")


class CollectionLock:
    """``DIR/.collection.lock`` (created exclusively, holding the pid) for the run; removed on exit."""

    def __init__(self, out: "str | os.PathLike") -> None:
        self.dir = pathlib.Path(out)
        self.path = self.dir / LOCK
        self.held = False

    def __enter__(self) -> "CollectionLock":
        from .fileio import pid_alive
        if self.dir.exists() and not self.dir.is_dir():
            raise ValueError(f"--out {str(self.dir)!r} exists and is not a folder")
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                pid = int(self.path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pid = -1
            if pid_alive(pid):
                raise ValueError(f"collection {str(self.dir)!r} is being written by another run (pid {pid})") from None
            raise ValueError(f"collection {str(self.dir)!r} has a lock left by a run that was killed (pid {pid}); "
                             f"its finished records are complete: remove {str(self.path)!r} and run again "
                             "(finished scans are kept, the rest are done)") from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        self.held = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.held:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.held = False


def _remove_partials(out: pathlib.Path, names: Sequence[str]) -> int:
    """Staged folders left by workers that were lost mid-scan (every item has its outcome now)."""
    n = 0
    for name in names:
        for p in out.glob(f".{name}.*.partial"):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


def run_collection(args: argparse.Namespace, config: ConfigFn, job: JobFn,
                   quiet: bool = False) -> Tuple[Dict[str, Any], int]:
    """The collection job; returns ``(summary, exit status)`` (1 when a scan failed)."""
    from .fileio import write_bytes
    check_args(args)
    config(argparse.Namespace(**{**vars(args), "scan": None}))  # every option checked before any work
    items = plan(args)
    out = pathlib.Path(args.out)
    repo = pathlib.Path(__file__).resolve().parent.parent
    with CollectionLock(out):
        progress = JobProgress(sum(i.weight for i in items), len(items), unit="MP", quiet=quiet)
        try:
            outcomes, stats = run_batch(items, _Factory(args, config, job), progress=progress, ray_address=args.ray,
                                        cpus_per_worker=args.ray_cpus, max_workers=args.workers or None,
                                        start_all=args.ray_start_all,
                                        env_paths=[str(repo)], ship=ship_scan, land=land_record)
        finally:
            progress.close()
        _remove_partials(out, [i.key for i in items])
        rows = index_rows(outcomes)
        write_bytes(out, "index.csv", index_csv(rows))
        write_bytes(out, "index.html", index_html(rows, f"Collection {out.name}"))
    failed = [r for r in rows if r["status"] == "failed"]
    summary = {"scans": len(rows), "done": sum(r["status"] == "done" for r in rows),
               "done_earlier": sum(r["status"] == "done earlier" for r in rows), "failed": len(failed),
               "failures": {r["name"]: r["reason"] for r in failed}, "workers": stats.workers,
               "lost_workers": stats.lost_workers, "retried": stats.retried, "where": stats.where,
               "by_worker": by_worker(outcomes), "wallclock_s": round(stats.seconds, 2),
               "index": str(out / "index.html")}
    return summary, 1 if failed else 0


class _Factory:
    """``make_worker`` for the actors (pickled to each: the parsed arguments and the two functions)."""

    def __init__(self, args: argparse.Namespace, config: ConfigFn, job: JobFn) -> None:
        self.args, self.config, self.job = args, config, job

    def __call__(self) -> ScanWorker:
        return ScanWorker(self.args, self.config, self.job)


def collection_main(args: argparse.Namespace, config: ConfigFn, job: JobFn) -> int:
    summary, rc = run_collection(args, config, job)
    print(json.dumps(summary, indent=1))
    return rc


__all__ = ["is_collection", "run_collection", "collection_main", "index_rows", "index_csv", "index_html",
           "record_names", "plan", "ScanWorker", "ShippedScan", "ship_scan", "land_record"]
