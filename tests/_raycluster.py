"""A Ray cluster of two nodes on 127.0.0.1 for the tests: a head and a worker, each a process of its own
(``tests/_raynode.py``, one CPU each) in a session of its own, started by the test and stopped after it
(SIGTERM, then SIGKILL, to the process groups this helper started; never ``ray stop``, which would stop every
Ray of the machine). Every address is 127.0.0.1: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's "local only"
switch) is set for the nodes, their workers and the drivers (``test_cluster_is_loopback_only`` checks the
addresses the nodes registered).

Ray is an optional extra: :func:`need_ray` skips loudly without it, and FAILS under CI (``CI`` set), where
``scripts/setup.sh`` installs ``requirements-ray.txt``.
"""
import importlib.util
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from _testenv import REPO

LOCAL_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
              # a lost node is noticed in ~2 s, not 30
              "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "4",
              "RAY_health_check_timeout_ms": "1000"}


def need_ray():
    if importlib.util.find_spec("ray") is not None:
        return
    msg = ("Ray is not installed in this venv (an optional extra: pip install -r requirements-ray.txt; "
           "scripts/setup.sh installs it into .venv)")
    if os.environ.get("CI"):
        pytest.fail("CI: " + msg)
    pytest.skip("!!! RAY TESTS SKIPPED !!! " + msg)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(extra_paths=()):
    """The environment of a node or driver: local only, the repository (and ``extra_paths``) importable."""
    e = dict(os.environ, **LOCAL_ONLY)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), *map(str, extra_paths)])
    return e


class Cluster:
    """``Cluster().start()``: head + one worker node; ``address``; ``kill_worker()``; ``add_worker()`` (a new
    worker node after a kill); ``stop()``."""

    def __init__(self, cpus=(1, 1), extra_paths=()):
        self.cpus, self.extra_paths = cpus, extra_paths
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="ray"))   # short: Ray's socket paths are length-limited
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs = []

    def _node(self, args, name):
        log = open(self.tmp / f"{name}.log", "wb")
        p = subprocess.Popen([sys.executable, str(REPO / "tests" / "_raynode.py"), *map(str, args)], stdout=log,
                             stderr=subprocess.STDOUT, env=env(self.extra_paths), start_new_session=True)
        self.procs.append(p)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = (self.tmp / f"{name}.log").read_text(errors="replace")
            if "READY" in text:
                return p
            if p.poll() is not None:
                raise RuntimeError(f"Ray node ({name}) exited:\n{text[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"Ray node ({name}) did not come up in 90 s")

    def start(self):
        try:
            self._node(["head", self.port, self.cpus[0], self.tmp / "r"], "head")
            self._node(["worker", self.address, self.cpus[1]], "worker")
        except BaseException:
            self.stop()
            raise
        return self

    def add_worker(self):
        """Start another worker node (one CPU) joining the head; returns when it is up."""
        self._node(["worker", self.address, self.cpus[1]], f"worker{len(self.procs)}")
        return self

    def ensure_worker(self):
        """One live worker node: a new one when the last was killed."""
        if len(self.procs) < 2 or self.procs[-1].poll() is not None:
            self.add_worker()
        return self

    def kill_worker(self):
        """SIGKILL the newest worker node's process group and every process below it (the raylet starts its
        workers in sessions of their own): a machine lost."""
        below = _descendants(self.procs[-1].pid)
        _kill(self.procs[-1], signal.SIGKILL)
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self):
        try:
            below = [pid for p in self.procs for pid in _descendants(p.pid)]
        except Exception:   # noqa: BLE001 - the process groups are stopped in any case
            below = []
        for p in reversed(self.procs):
            _kill(p, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            _kill(p, signal.SIGKILL)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for pid in below:   # processes this cluster started that left its process groups (Ray's workers)
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.procs = []
        shutil.rmtree(self.tmp, ignore_errors=True)


def _descendants(pid):
    """Every process below ``pid`` (from /proc: parent ids), this moment."""
    parent = {}
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _kill(p, sig):
    try:
        os.killpg(p.pid, sig)   # the session this helper started (ray start and everything it spawned)
    except (ProcessLookupError, PermissionError):
        pass
