"""Batch jobs of the command lines over many inputs, in this process or on a Ray cluster.

Used by ``python -m restoration`` and the DLoRAL CLI only; nothing the nodes import reaches it, and Ray is
an optional extra (``pip install .[ray]`` or ``requirements-ray.txt``): it is imported inside the functions
that need it, never at module level (``tests/core/test_packaging.py`` checks both).

* :func:`expand_inputs`: the CLI's INPUT arguments -> a sorted, de-duplicated list of files (or frame
  folders): a folder (its files with the given extensions), a glob (``'scans/*.tif'``), a list file
  (``@list.txt``: one path a line, ``#`` comments, paths relative to the list) or a file.
* :func:`run_batch`: every item through ``work = make_worker(); work(item)``. Without Ray one worker in this
  process. With Ray one actor per slot (a GPU each where the cluster has GPUs and the work uses them, else
  ``cpus_per_worker`` CPUs each) calls ``make_worker`` once (the models are loaded once per actor) and takes the next item
  when it is free. An item whose actor is lost (its process or node died) goes back to the queue and is
  retried on another actor (a replacement actor is started); an exception raised by ``work`` is that
  item's failure, reported with its reason while the rest go on. ``work`` must be idempotent and write
  its outputs atomically (the cores' staged folders and partial files do): a retried item whose output
  was completed just before its actor died finds it complete and does not write it again.
* **No shared file system needed where the CLI ships bytes**: on Ray, ``ship(payload, sees)`` runs in the
  driver as an item is handed to an actor (it reads the input's bytes into the payload, or returns
  :class:`Done` when the item needs no worker: its output is already in place) and ``land(payload, result)``
  runs in the driver on the item's one final result (it writes the output the worker returned as bytes,
  staged and renamed). The driver takes one final result per item, so an output a lost worker made is never
  written (and never twice). :func:`read_tree` and :func:`write_tree` pack and unpack a folder's files. ``must_see``: paths each actor checks,
  as it starts, whether it sees as the driver does (same kind, size and modification time); ``sees`` tells
  ``ship`` whether the actor taking the item does (it may then send the paths, not the bytes: a shared file
  system, or Ray on this machine). Without Ray none of these is used.
* :class:`JobProgress`: one progress line for the whole job (items done, failed, retried, work units per
  second, ETA), on stderr; :class:`StatusLine` the ending of such a line (also the single-scan bar's).
* :func:`add_ray_arguments`: the ``--ray [ADDRESS]``, ``--workers`` and ``--ray-cpus`` flags of both CLIs.
"""
from __future__ import annotations

import argparse
import glob
import os
import pathlib
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

__all__ = ["BatchItem", "Outcome", "JobProgress", "StatusLine", "expand_inputs", "run_batch", "connect", "LOCAL",
           "add_ray_arguments", "Done", "read_tree", "write_tree", "by_worker", "fingerprint", "failure_reason"]

#: ``--ray`` without an address: start a Ray instance on this machine for the job
LOCAL = "local"


def add_ray_arguments(parser: argparse.ArgumentParser, what: str, cpus_when: str = "with --ray") -> None:
    """The batch flags of a command line: ``--ray [ADDRESS]`` (alone: :data:`LOCAL`; the address is read by
    :func:`connect`), ``--workers`` (at most this many; 0 = one per slot) and ``--ray-cpus`` (CPUs per worker).
    ``what`` names what is spread ("a collection's scans"), ``cpus_when`` when ``--ray-cpus`` applies."""
    parser.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                        help=f"spread {what} over Ray workers (an optional extra): no ADDRESS = Ray on this "
                             "machine, 'auto' = the cluster Ray finds, else HOST:PORT of a cluster's head")
    parser.add_argument("--workers", type=int, default=0,
                        help="with --ray: at most this many workers (0 = one per slot)")
    parser.add_argument("--ray-cpus", type=float, default=1.0, help=f"{cpus_when}: CPUs per worker (default 1)")
    parser.add_argument("--ray-start-all", action="store_true",
                        help="with --ray: hand out work only once every worker has started (models loaded), so a "
                             "short job is split over all of them; by default the first worker up starts at once")


def expand_inputs(specs: Sequence[str], exts: Sequence[str], dirs_are_items: bool = False) -> List[pathlib.Path]:
    """The items named by the CLI's INPUT arguments, in a stable order, each once.

    A folder gives its files whose suffix is in ``exts`` (sorted by name), or, with ``dirs_are_items``
    (DLoRAL: a folder of frames is one video), itself; a glob its matches; ``@FILE`` the paths listed in
    FILE (one a line, blank lines and ``#`` comments skipped, relative paths from FILE's folder), each
    expanded again; anything else must be a file. ValueError names an argument that gives nothing."""
    out: List[pathlib.Path] = []
    seen = set()

    def add(p: pathlib.Path) -> None:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)

    def one(spec: str, base: Optional[pathlib.Path], depth: int) -> None:
        if spec.startswith("@"):
            if depth > 4:
                raise ValueError(f"list file {spec!r}: lists nested more than 4 deep")
            lst = pathlib.Path(spec[1:]) if base is None or os.path.isabs(spec[1:]) else base / spec[1:]
            try:
                lines = lst.read_text().splitlines()
            except OSError as exc:
                raise ValueError(f"list file {str(lst)!r} cannot be read: {exc.strerror}") from None
            n0 = len(out)
            for line in lines:
                line = line.strip()
                if line and not line.startswith("#"):
                    one(line, lst.parent, depth + 1)
            if len(out) == n0:
                raise ValueError(f"list file {str(lst)!r} names no input")
            return
        p = pathlib.Path(spec) if base is None or os.path.isabs(spec) else base / spec
        if p.is_dir():
            if dirs_are_items:
                add(p)
                return
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in exts)
            if not files:
                raise ValueError(f"INPUT folder {str(p)!r} holds no file ending in {', '.join(exts)}")
            for f in files:
                add(f)
        elif p.is_file():
            add(p)
        elif glob.has_magic(str(p)):
            hits = sorted(pathlib.Path(h) for h in glob.glob(str(p)))
            if not hits:
                raise ValueError(f"INPUT {spec!r} matches nothing")
            for h in hits:
                if h.is_file() or (dirs_are_items and h.is_dir()):
                    add(h)
        else:
            raise ValueError(f"INPUT {spec!r}: no such file or folder")

    for s in specs:
        one(s, None, 0)
    return out


@dataclass(frozen=True)
class BatchItem:
    """One unit of work: ``key`` names it in messages, ``weight`` its share of the job (frames, pixels) for
    the ETA, ``payload`` what ``work`` gets (picklable)."""
    key: str
    payload: Any
    weight: float = 1.0


@dataclass
class Outcome:
    """What became of one item: ``result`` (what ``work`` returned) or ``error`` (the reason), the attempts
    it took (more than 1 after a lost worker) and the worker that finished it."""
    item: BatchItem
    result: Any = None
    error: Optional[str] = None
    attempts: int = 0
    worker: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class JobStats:
    """Counts of a whole job (the summary): workers started and lost, items retried."""
    workers: int = 0
    lost_workers: int = 0
    retried: int = 0
    seconds: float = 0.0
    where: str = "in process"
    worker_names: List[str] = field(default_factory=list)


class StatusLine:
    """A status line on ``self.stream``, rewritten in place on a terminal; ``open`` while it has no line end.
    ``close()`` ends it, so that a message printed afterwards starts on a line of its own."""
    stream: Any
    open: bool = False

    def close(self) -> None:
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False


class JobProgress(StatusLine):
    """One line for the whole job on ``stream``: ``[done/total] failed retried  rate  ETA``; on a terminal it
    is rewritten in place, otherwise a line per change. The ETA is the remaining weight at the rate so far."""

    def __init__(self, total_weight: float, n_items: int, unit: str = "item", stream: Any = None,
                 quiet: bool = False) -> None:
        self.total, self.n_items, self.unit = float(total_weight), n_items, unit
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.t0 = time.monotonic()
        self.done_w, self.done, self.failed, self.retried, self.workers, self.busy = 0.0, 0, 0, 0, 0, 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.open = False

    def update(self, *, weight: float = 0.0, done: int = 0, failed: int = 0, retried: int = 0,
               workers: Optional[int] = None, busy: Optional[int] = None) -> None:
        self.done_w += weight
        self.done += done
        self.failed += failed
        self.retried += retried
        if workers is not None:
            self.workers = workers
        if busy is not None:
            self.busy = busy
        if not self.quiet:
            self._write(self.line())

    def line(self) -> str:
        el = time.monotonic() - self.t0
        msg = f"job {self.done}/{self.n_items} done"
        if self.failed:
            msg += f", {self.failed} failed"
        if self.retried:
            msg += f", {self.retried} retried"
        if self.workers:
            msg += f" | {self.workers} worker{'s' if self.workers != 1 else ''}, {self.busy} busy"
        if self.done_w > 0 and el > 0:
            rate = self.done_w / el
            left = max(self.total - self.done_w, 0.0) / rate
            msg += f" | {rate:.3g} {self.unit}/s | ETA {int(left // 60)}:{int(left % 60):02d}"
        return msg

    def _write(self, msg: str) -> None:
        self.open = self.tty
        self.stream.write(("\r" + msg + "\x1b[K") if self.tty else msg + "\n")
        self.stream.flush()


@dataclass(frozen=True)
class Done:
    """What ``ship`` returns for an item that needs no worker (its output is in place): its ``result``."""
    result: Any


def read_tree(folder: "str | os.PathLike") -> Dict[str, bytes]:
    """Every file below ``folder``: its path relative to ``folder`` (``/``-separated) -> its bytes."""
    root = pathlib.Path(folder)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write_tree(folder: "str | os.PathLike", files: Dict[str, bytes]) -> None:
    """The files :func:`read_tree` gave, written below ``folder`` (which exists)."""
    root = pathlib.Path(folder)
    for rel, data in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)


def fingerprint(path: "str | os.PathLike") -> str:
    """What ``must_see`` compares: a path's kind, size and modification time as this machine sees it."""
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{'dir' if os.path.isdir(path) else 'file'}:{st.st_size}:{st.st_mtime_ns}"


def by_worker(outcomes: Sequence[Outcome]) -> Dict[str, int]:
    """How many items each worker finished (its name: host, node address, process; ``driver`` for an item
    whose output was already in place): the summary's account of where the job ran."""
    out: Dict[str, int] = {}
    for o in outcomes:
        if o.worker:
            out[o.worker] = out.get(o.worker, 0) + 1
    return dict(sorted(out.items()))


def failure_reason(exc: BaseException) -> str:
    """An item's failure as one line: a ValueError's message as it is (it names the input), else the
    exception's type and message."""
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


class _Runner:
    """The body of a Ray actor (also usable in process): ``make_worker()`` once, then ``work(payload)``."""

    def __init__(self, make_worker: Callable[[], Callable[[Any], Any]]) -> None:
        self.work = make_worker()

    def ready(self, must_see: Sequence[Tuple[str, str]] = ()) -> Tuple[str, bool]:
        """``(name, whether every path of must_see (path, driver's fingerprint) looks the same here)``. The
        name: host, node address (Ray's) and process id."""
        import socket
        name = f"{socket.gethostname()}:{os.getpid()}"
        try:
            import ray
            name = f"{socket.gethostname()} {ray.util.get_node_ip_address()} pid {os.getpid()}"
        except Exception:   # noqa: BLE001 - in process, or an address Ray cannot tell: the host name
            pass
        return name, all(fingerprint(path) == want for path, want in must_see)

    def run(self, payload: Any) -> Tuple[bool, Any]:
        """``(True, result)`` or ``(False, reason)``: a failure of the input is data, not a lost worker."""
        try:
            return True, self.work(payload)
        except Exception as exc:   # noqa: BLE001 - the reason goes into the job's report
            return False, failure_reason(exc)


def connect(address: Optional[str], env_paths: Sequence[str] = (), num_cpus: Optional[int] = None) -> str:
    """``ray.init`` for a job: ``address`` ``"local"`` starts Ray on this machine (``num_cpus`` slots),
    ``"auto"`` joins the cluster Ray finds (``RAY_ADDRESS`` or the one started on this machine), anything
    else is a cluster's ``HOST:PORT``. The workers get ``env_paths`` on their ``PYTHONPATH`` (the pack's
    folders: every machine of the cluster holds the pack at the same path). Returns a description."""
    if address not in (None, LOCAL, "auto") and (os.path.exists(address) or ":" not in address):
        raise ValueError(f"--ray {address!r} is not HOST:PORT (an input named after --ray? put --ray last, or give "
                         "it an address: auto, HOST:PORT)")
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray, an optional extra: pip install 'ray[default]' "
                         "(or pip install -r requirements-ray.txt)") from None
    paths = [str(p) for p in env_paths]
    old = os.environ.get("PYTHONPATH")
    if old:
        paths.append(old)
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}} if paths else None
    kw: Dict[str, Any] = {"runtime_env": runtime_env, "log_to_driver": False, "include_dashboard": False,
                          "configure_logging": False}
    if address == LOCAL or address is None:
        kw["num_cpus"] = num_cpus
        ray.init(**kw)
    else:
        kw.pop("include_dashboard")
        ray.init(address=address, **kw)
    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return f"Ray {'local' if address in (None, LOCAL) else address}: {nodes} node(s), " \
           f"{res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU"


def _slots(cpus_per_worker: float, max_workers: Optional[int], gpus: bool) -> Tuple[int, Dict[str, float]]:
    """How many actors, and each one's resources: a GPU each where the cluster has GPUs and the work uses
    them (``gpus``), else ``cpus_per_worker`` CPUs each."""
    import ray
    res = ray.cluster_resources()
    if gpus and res.get("GPU", 0) >= 1:
        n, opts = int(res["GPU"]), {"num_gpus": 1, "num_cpus": min(cpus_per_worker, 1)}
    else:
        n, opts = int(res.get("CPU", 0) // cpus_per_worker), {"num_cpus": cpus_per_worker}
    if max_workers:
        n = min(n, max_workers)
    if n < 1:
        raise ValueError(f"the Ray cluster has no free slot for a worker ({res.get('CPU', 0):g} CPU, "
                         f"{cpus_per_worker:g} asked per worker)")
    return n, opts


def run_batch(items: Sequence[BatchItem], make_worker: Callable[[], Callable[[Any], Any]],
              progress: Optional[JobProgress] = None, ray_address: Optional[str] = None,
              cpus_per_worker: float = 1.0, max_workers: Optional[int] = None, max_attempts: int = 3,
              env_paths: Sequence[str] = (), start_timeout_s: float = 600.0,
              gpus: bool = False, on_outcome: Optional[Callable[[Outcome], None]] = None,
              ship: Optional[Callable[[Any, bool], Any]] = None, land: Optional[Callable[[Any, Any], Any]] = None,
              must_see: Sequence[str] = (), start_all: bool = False) -> Tuple[List[Outcome], JobStats]:
    """Every item through a worker; returns the outcomes in item order and the job's counts.

    ``ray_address`` None runs in this process; otherwise see :func:`connect` (the caller's Ray session
    is shut down at the end when this function started it; ``gpus``: one actor per GPU where the cluster
    has GPUs). An item is tried at most ``max_attempts``
    times when workers are lost under it; ``work`` raising is a failure of that item, not retried.
    ``on_outcome(outcome)`` is called in this process as each item gets its final outcome (DLoRAL: a clip
    whose last chunk is done is stitched then, while the workers go on). On Ray only: ``ship``, ``land``
    (the driver reads the inputs and writes the outputs: no shared file system) and ``must_see`` (paths each
    actor checks it sees as the driver does), as the module's docstring says; ``ship`` or ``land`` raising is
    that item's failure. ``start_all``: no item is handed out before every first actor has started (or
    ``start_timeout_s`` has passed with at least one up), so that each takes one at once."""
    outcomes = [Outcome(it) for it in items]
    stats = JobStats()
    t0 = time.monotonic()
    if ray_address is None:
        stats.workers, stats.worker_names = 1, ["this process"]
        runner = _Runner(make_worker)
        if progress is not None:
            progress.update(workers=1, busy=1)
        for o in outcomes:
            o.attempts, o.worker = 1, "this process"
            ok, val = runner.run(o.item.payload)
            if ok:
                o.result = val
            else:
                o.error = val
            if progress is not None:
                progress.update(weight=o.item.weight, done=int(ok), failed=int(not ok))
            if on_outcome is not None:
                on_outcome(o)
        stats.seconds = time.monotonic() - t0
        return outcomes, stats
    import contextlib
    import ray
    started_here = not ray.is_initialized()
    # Ray prints cluster events (a node marked dead, ...) with print(): stdout stays the command's own
    with contextlib.redirect_stdout(sys.stderr):
        if started_here:
            stats.where = connect(ray_address, env_paths, num_cpus=None if max_workers is None
                                  else int(max_workers * cpus_per_worker))
        try:
            _run_on_ray(outcomes, make_worker, progress, stats, cpus_per_worker, max_workers, max_attempts,
                        start_timeout_s, gpus, on_outcome, ship, land, [(str(p), fingerprint(p)) for p in must_see],
                        start_all)
        finally:
            if started_here:
                ray.shutdown()
    stats.seconds = time.monotonic() - t0
    return outcomes, stats


def _run_on_ray(outcomes: List[Outcome], make_worker: Callable[[], Callable[[Any], Any]],
                progress: Optional[JobProgress], stats: JobStats, cpus_per_worker: float,
                max_workers: Optional[int], max_attempts: int, start_timeout_s: float, gpus: bool,
                on_outcome: Optional[Callable[[Outcome], None]] = None, ship: Optional[Callable[[Any, bool], Any]] = None,
                land: Optional[Callable[[Any, Any], Any]] = None, must_see: Sequence[Tuple[str, str]] = (),
                start_all: bool = False) -> None:
    """The scheduling loop: a free actor takes the next queued item; a lost actor's item is queued again
    (front of the queue) and a replacement actor started; the loop ends when every item has an outcome."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError, RaySystemError, WorkerCrashedError
    lost_errors = (RayActorError, WorkerCrashedError, RaySystemError)
    n, opts = _slots(cpus_per_worker, max_workers, gpus)
    actor_cls: Any = ray.remote(_Runner).options(max_restarts=0, max_task_retries=0, **opts)
    queue: Deque[int] = deque(range(len(outcomes)))
    starting: Dict[Any, Any] = {}    # ready ref -> actor
    busy: Dict[Any, Tuple[Any, int, str]] = {}   # run ref -> (actor, item index, worker name)
    free: List[Tuple[Any, str]] = []
    last_ready = time.monotonic()

    def start() -> None:
        a: Any = actor_cls.remote(make_worker)
        starting[a.ready.remote(list(must_see))] = a
        stats.workers += 1

    def final(o: Outcome, ok: bool, val: Any) -> None:
        if ok:
            o.result = val
        else:
            o.error = val
        if progress is not None:
            progress.update(weight=o.item.weight, done=int(ok), failed=int(not ok), busy=len(busy))
        if on_outcome is not None:
            on_outcome(o)

    sees: Dict[str, bool] = {}   # worker name -> whether it sees the must_see paths as the driver does

    def shipped(o: Outcome, name: str) -> Tuple[bool, Any]:
        """``(True, payload for the actor)``, or ``(False, (ok, value))``: the item's outcome, no actor needed."""
        if ship is None:
            return True, o.item.payload
        try:
            sent = ship(o.item.payload, sees[name])
        except Exception as exc:   # noqa: BLE001 - the input could not be read: that item's failure
            return False, (False, failure_reason(exc))
        return (False, (True, sent.result)) if isinstance(sent, Done) else (True, sent)

    for _ in range(min(n, len(outcomes)) or 1):
        start()
    t_first = time.monotonic()
    held = start_all   # with start_all: nothing handed out until the first actors are all up
    while queue or busy:
        if held and (not starting or time.monotonic() - t_first > start_timeout_s and free):
            held = False
        assigned = bool(free and queue and not held)
        while free and queue and not held:
            i = queue.popleft()
            o = outcomes[i]
            a, name = free.pop()
            go, sent = shipped(o, name)
            if not go:
                free.append((a, name))
                o.attempts, o.worker = 1, "driver"
                final(o, *sent)
                continue
            o.attempts += 1
            busy[a.run.remote(sent)] = (a, i, name)
        if assigned and progress is not None:
            progress.update(workers=len(free) + len(busy), busy=len(busy))
        if not busy and not free and not starting:
            start()
        waiting = list(busy) + list(starting)
        done, _ = ray.wait(waiting, num_returns=1, timeout=5.0)
        if not done:
            if not busy and not free and time.monotonic() - last_ready > start_timeout_s:
                raise ValueError(f"no Ray worker could start in {start_timeout_s:.0f} s (the cluster has no free "
                                 "slot?); nothing left was processed")
            continue
        ref = done[0]
        if ref in starting:
            a = starting.pop(ref)
            try:
                name, same_files = ray.get(ref)
            except lost_errors as exc:
                stats.lost_workers += 1
                if stats.lost_workers > max_attempts * max(len(outcomes), 1):
                    raise ValueError(f"Ray workers keep failing to start: {exc}") from None
                start()
                continue
            sees[name] = same_files
            last_ready = time.monotonic()
            stats.worker_names.append(name)
            free.append((a, name))
            continue
        a, i, name = busy.pop(ref)
        o = outcomes[i]
        try:
            ok, val = ray.get(ref)
        except lost_errors as exc:   # the actor's process or node is gone: retry the item elsewhere
            stats.lost_workers += 1
            ray.kill(a, no_restart=True)
            if o.attempts >= max_attempts:
                o.error = f"lost its worker {o.attempts} times (last: {type(exc).__name__})"
                if progress is not None:
                    progress.update(weight=o.item.weight, failed=1)
                if on_outcome is not None:
                    on_outcome(o)
            else:
                stats.retried += 1
                queue.appendleft(i)
                if progress is not None:
                    progress.update(retried=1, workers=len(free) + len(busy), busy=len(busy))
            if len(free) + len(busy) + len(starting) < n and (queue or busy):
                start()
            continue
        except GetTimeoutError:   # pragma: no cover - ray.wait said it was ready
            queue.appendleft(i)
            continue
        o.worker = name
        free.append((a, name))
        if ok and land is not None:   # the one final result of this item: its output written here, once
            try:
                val = land(o.item.payload, val)
            except Exception as exc:   # noqa: BLE001 - the output could not be placed: that item's failure
                ok, val = False, failure_reason(exc)
        final(o, ok, val)
    for a in [a for a, _ in free] + [a for a, _, _ in busy.values()] + list(starting.values()):
        ray.kill(a, no_restart=True)
