"""A Ray cluster of two nodes on 127.0.0.1 for the tests: a head and a worker, each a process of its own
(``tests/_raynode.py``, one CPU each) in a session of its own, started by the test and stopped after it
(SIGTERM, then SIGKILL, to the process groups this helper started; never ``ray stop``, which would stop every
Ray of the machine). Every address is 127.0.0.1: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's "local only"
switch) is set for the nodes, their workers and the drivers (``test_cluster_is_loopback_only`` checks the
addresses the nodes registered).

Ray is an optional extra: :func:`need_ray` skips loudly without it, and FAILS under CI (``CI`` set), where
``scripts/setup.sh`` installs ``requirements-ray.txt``.

:class:`TwoHosts` is a cluster of two machines' network stacks on this one (``tests/core/test_ray_two_hosts.py``):
network namespaces A (head, 10.231.7.1) and B (worker, 10.231.7.2) joined by a veth pair, each node started
with Ray's own ``ray start`` in its namespace, and B's mount namespace holding an empty tmpfs over the test's
folder (inputs, outputs, the head's temp dir), so B shares no file of the job with A. It needs root, ``ip``
(iproute2), ``unshare`` and ``nsenter`` (util-linux): :func:`need_netns` skips loudly without them and FAILS
under CI. Every address is one of the namespaces this helper makes; every process it stops is one of theirs.
"""
import importlib.util
import json
import os
import pathlib
import secrets
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


def start_node(argv, name, folder, environ, ready_word, procs, timeout_s=90):
    """Start a Ray node's process (its output in ``folder/name.log``, added to ``procs`` at once so that a
    stop finds it) and wait until its log shows ``ready_word``; RuntimeError with the log's tail when it exits
    first or does not come up in ``timeout_s``."""
    log = open(folder / f"{name}.log", "wb")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=environ, start_new_session=True)
    procs.append(p)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = (folder / f"{name}.log").read_text(errors="replace")
        if ready_word in text:
            return p
        if p.poll() is not None:
            raise RuntimeError(f"Ray node ({name}) exited:\n{text[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"Ray node ({name}) did not come up in {timeout_s} s")


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
        return start_node([sys.executable, str(REPO / "tests" / "_raynode.py"), *map(str, args)], name, self.tmp,
                          env(self.extra_paths), "READY", self.procs)

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


# ------------------------------------------------- the inputs and outputs of the Ray tests (both files) ---
def make_scans(d, n=5, size=(128, 176)):
    from restoration.fileio import to_uint, write_tiff
    from restoration.synth import SynthConfig, make_sample
    d.mkdir()
    for i in range(n):
        img = make_sample(SynthConfig(height=size[0], width=size[1]), seed=10 + i)[0]
        write_tiff(d, f"scan{i}.tif", to_uint(img, 16), 600)
    (d / "broken.png").write_bytes(b"not a picture")
    return d


def records(out):
    """name -> {file: sha256} of every record file the manifest lists (the record's content)."""
    got = {}
    for m in sorted(out.glob("*/manifest.json")):
        man = json.loads(m.read_text())
        files = {f["path"]: f["sha256"] for f in man["files"]}
        from restoration.fileio import sha256_file
        for p, h in files.items():
            assert sha256_file(m.parent / p) == h, (m.parent.name, p)
        got[m.parent.name] = files
    return got


def make_clips(root):
    """Two frame folders, one video (MJPG .avi) and a broken video, in a folder of their own each way."""
    import cv2
    import _dloral_models
    from dloral.__main__ import _save
    from dloral import convert_official, save_weights
    from _dloral_synth import make_official, unet_shapes
    root.mkdir()
    save_weights(convert_official(make_official(unet_shapes(), seed=0)[0]), str(root / "w.safetensors"))
    (root / "ck.safetensors").write_bytes(b"stand-in: the tiny loader reads no checkpoint")
    for k, n in ((0, 5), (1, 3)):
        d = root / "frames" / f"clip{k}"
        d.mkdir(parents=True)
        for i, f in enumerate(_dloral_models.frames(n, seed=k)):
            _save(f, d / f"f{i:03d}.png")
    vids = root / "videos"
    vids.mkdir()
    import numpy as np
    wr = cv2.VideoWriter(str(vids / "clip2.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (16, 16))
    for f in _dloral_models.frames(4, seed=2):
        wr.write((f.permute(1, 2, 0).numpy()[..., ::-1] * 255).astype(np.uint8))
    wr.release()
    (vids / "broken.mp4").write_bytes(b"\0" * 64)
    return root


def dloral_args(root, out, *extra):
    (root / "list.txt").write_text("# the rest\nframes/clip1\nvideos\n")
    return ["upscale", str(root / "frames" / "clip0"), "@" + str(root / "list.txt"), "--out", str(out),
            "--weights", str(root / "w.safetensors"), "--checkpoint", str(root / "ck.safetensors"),
            "--process-size", "64", "--window", "2", "--batch-ext", "frames", *extra]


def tree(out):
    from restoration.fileio import sha256_file
    return {str(p.relative_to(out)): sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------- two machines' networks ---
SUBNET = "10.231.7"
NETNS_TOOLS = ("ip", "unshare", "nsenter", "mount")


def need_netns():
    """Ray, root and the tools of :class:`TwoHosts`: skip loudly without them, FAIL under CI."""
    need_ray()
    why = None
    if os.geteuid() != 0:
        why = "network namespaces need root"
    else:
        missing = [t for t in NETNS_TOOLS if shutil.which(t) is None]
        if missing:
            why = f"missing {', '.join(missing)} (apt-get install iproute2 util-linux mount; scripts/setup.sh does)"
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail("CI: two-host Ray test: " + why)
    pytest.skip("!!! TWO-HOST RAY TEST SKIPPED !!! " + why)


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


class TwoHosts:
    """``TwoHosts().start()``: namespaces ``ns[0]`` (A: head, ``ips[0]``) and ``ns[1]`` (B: worker, ``ips[1]``),
    a Ray node in each (1 CPU, a small object store, no dashboard, token authentication with a token of its
    own); ``tmp`` (short: Ray's socket paths are length-limited) is the job's folder, which B sees as an empty
    tmpfs; ``run_in_a(argv)`` runs a command (a job's driver) in A; ``sees_in_b(path)``; ``stop()`` kills every
    process of both namespaces and deletes them."""

    def __init__(self, cpus=(1, 1), extra_paths=()):
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.ns = (f"atray{tag}a", f"atray{tag}b")
        self.veth = (f"atv{tag}a", f"atv{tag}b")
        self.ips = (f"{SUBNET}.1", f"{SUBNET}.2")
        self.port = 6379
        self.address = f"{self.ips[0]}:{self.port}"
        self.cpus = cpus
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="ray2h"))
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
                        RAY_AUTH_TOKEN=secrets.token_hex(16), PYTHONPATH=os.pathsep.join([str(REPO), *map(str, extra_paths)]))
        self.env.pop("RAY_ADDRESS", None)
        self.env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        self.ray = str(pathlib.Path(sys.executable).with_name("ray"))
        self.procs = []
        self.made = []

    def make_network(self):
        """The two namespaces, the veth pair between them, an address on each end, loopback up in each."""
        for ns in self.ns:
            _ip("netns", "add", ns)
            self.made.append(ns)
        _ip("link", "add", self.veth[0], "type", "veth", "peer", "name", self.veth[1])
        for ns, dev, ip in zip(self.ns, self.veth, self.ips):
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        return self

    def _node(self, argv, name):
        return start_node(argv, name, self.tmp, self.env, "Ray runtime started", self.procs)

    def start(self):
        common = ["--num-cpus", None, "--num-gpus", "0", "--object-store-memory", str(80 * 2**20),
                  "--disable-usage-stats", "--block"]
        try:
            a = [*common]
            a[1] = str(self.cpus[0])
            self._node(["ip", "netns", "exec", self.ns[0], self.ray, "start", "--head", "--node-ip-address", self.ips[0],
                        "--port", str(self.port), "--include-dashboard", "false", "--temp-dir", str(self.tmp / "r"), *a],
                       "head")
            b = [*common]
            b[1] = str(self.cpus[1])
            # B: a mount namespace of its own with an empty tmpfs over the job's folder (A's files there unseen)
            self._node(["ip", "netns", "exec", self.ns[1], "unshare", "--mount", "--propagation", "private", "sh", "-c",
                        'mount -t tmpfs -o size=256m atelier-ray-b "$0" && exec "$@"', str(self.tmp),
                        self.ray, "start", "--address", self.address, "--node-ip-address", self.ips[1], *b], "worker")
        except BaseException:
            self.stop()
            raise
        return self

    def run_in_a(self, argv, timeout=240):
        return subprocess.run(["ip", "netns", "exec", self.ns[0], *argv], cwd=REPO, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def sees_in_b(self, path):
        """Whether B's worker node (its raylet's mount namespace) sees ``path``."""
        pids = self.pids(self.ns[1])
        r = subprocess.run(["nsenter", "--target", str(pids[0]), "--mount", "--", "test", "-e", str(path)], timeout=30)
        return r.returncode == 0

    def pids(self, ns):
        r = _ip("netns", "pids", ns, check=False)
        return [int(x) for x in r.stdout.split()]

    def stop(self):
        """SIGKILL every process of the two namespaces (all started here), then delete them and the folder."""
        for _ in range(20):
            left = [pid for ns in self.made for pid in self.pids(ns)]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.25)
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        for ns in self.made:
            _ip("netns", "del", ns, check=False)   # the veth pair goes with its namespaces
        if _ip("link", "show", self.veth[0], check=False).returncode == 0:   # made, never moved into A
            _ip("link", "del", self.veth[0], check=False)
        self.made = []
        shutil.rmtree(self.tmp, ignore_errors=True)
