"""The exemplar fill on several workers (issue 21 item 4, time): independent holes filled at the same time give
the one-by-one fill bit for bit, on processes (Linux) and threads, with holes that touch each other's reach,
whatever the damaged pixels hold; the groups of :func:`restoration.exemplar.hole_groups` on known layouts; the
caller's progress and its interrupt; a failing worker; the ``fill_workers`` record."""
import multiprocessing

import cv2
import numpy as np
import pytest

from atelier_settings import SettingError
from restoration import exemplar as E
from restoration import stages
from restoration.settings import SETTINGS


def _picture(h=160, w=160, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 0.45 + 0.2 * np.sin(xx / 5.0 + yy / 9.0)[..., None] * np.array([1.0, 0.8, 0.6], np.float32)
    return np.clip(img + 0.03 * rng.standard_normal((h, w, 1)).astype(np.float32), 0, 1).astype(np.float32)


def _near_holes(h=160, w=160):
    """Holes in each other's reach: a C-shaped hole around a dot, pairs 2 px apart (straight and diagonal), a
    scratch passing next to blobs, a hole on the border, and far-away holes on their own."""
    m = np.zeros((h, w), bool)
    yy, xx = np.mgrid[0:h, 0:w]
    ring = (np.hypot(yy - 40, xx - 40) <= 14) & (np.hypot(yy - 40, xx - 40) >= 9)
    ring[36:45, 40:56] = False                     # open on the right: a C
    m |= ring
    m[39:42, 39:42] = True                         # a dot inside the C (in its box, not touching it)
    m[80:90, 20:23] = True                         # an L ...
    m[80:83, 20:30] = True
    m[86:90, 25:30] = True                         # ... with a block in its box, 2 px from it
    m[80:90, 32:40] = True                         # 2 px to the right of the L's box
    m[92:97, 41:46] = True                         # 2 px diagonally below-right of the last
    m[120, 5:150] = True                           # a scratch ...
    m[122:130, 60:70] = True                       # ... with a blob 1 px below it
    m[110:117, 100:112] = True                     # ... and one 3 px above
    m[0:6, 100:110] = True                         # on the border
    m[150:158, 150:160] = True
    m[20:26, 120:150] = True                       # far from everything
    return m


@pytest.fixture
def small_parallel(monkeypatch):
    """Small pictures go parallel too (the real threshold keeps them on the caller's thread)."""
    monkeypatch.setattr(E, "PARALLEL_MIN_AREA", 1)


@pytest.mark.parametrize("threads", [False, True])
def test_workers_give_the_one_by_one_fill_bit_for_bit(small_parallel, monkeypatch, threads):
    if threads:
        monkeypatch.setattr(E, "_can_fork", lambda: False)
    img, mask = _picture(), _near_holes()
    for sentinel in (0.0, np.nan):                 # what the damaged pixels hold must not matter either
        dmg = img.copy()
        dmg[mask] = sentinel
        ref, rest0 = E.exemplar_fill(dmg, mask, workers=1)
        for k in (2, 3):
            out, rest = E.exemplar_fill(dmg, mask, workers=k)
            assert np.array_equal(out.view(np.uint32), ref.view(np.uint32)), (k, sentinel)
            assert np.array_equal(rest, rest0)
        assert np.isfinite(ref).all() and not rest0.any()
    assert not multiprocessing.active_children()


def test_groups_side_by_side_give_the_one_by_one_fill_bit_for_bit(monkeypatch):
    """In one thread the hole groups run side by side, their pieces' membranes solved as one banded system per step
    (:func:`restoration.exemplar._fill_lockstep`): the fill equals the one where every group runs alone
    (LOCKSTEP 1: each membrane solved by itself), bit for bit, and the batches did hold several boxes."""
    img, mask = _picture(), _near_holes()
    sizes = []
    real = E._membrane_batch
    monkeypatch.setattr(E, "_membrane_batch", lambda boxes: sizes.append(len(boxes)) or real(boxes))
    out, rest = E.exemplar_fill(img, mask)
    assert max(sizes) > 1
    sizes.clear()
    monkeypatch.setattr(E, "LOCKSTEP", 1)
    ref, rest0 = E.exemplar_fill(img, mask)
    assert max(sizes) == 1
    assert np.array_equal(out.view(np.uint32), ref.view(np.uint32)) and np.array_equal(rest, rest0)


def test_the_c_and_its_dot_read_each_other_so_they_share_a_group():
    mask = _near_holes()
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    groups = E.hole_groups(lab, stats, band=1)
    assert sorted(i for g in groups for i in g) == list(range(1, n))
    assert all(g == sorted(g) for g in groups)
    assert [g[0] for g in groups] == sorted(g[0] for g in groups)   # raster order of their first hole
    of = {i: tuple(g) for g in groups for i in g}
    at = lambda y, x: int(lab[y, x])              # noqa: E731
    assert of[at(40, 40)] == of[at(40, 28)]        # the dot lies in the C's box
    assert of[at(85, 21)] == of[at(88, 27)]        # the block lies in the L's box
    assert len({of[at(85, 21)], of[at(85, 35)], of[at(94, 43)]}) == 3   # 2 px outside a box: beyond its reach
    assert of[at(120, 10)] != of[at(125, 65)]      # 1 px below a straight scratch: beyond its reach (band 1)
    assert of[at(22, 130)] == (at(22, 130),)       # far away: alone
    # band 3: the boxes 2 px apart (3 px from edge to edge) are in each other's reach
    of2 = {i: tuple(g) for g in E.hole_groups(lab, stats, band=3) for i in g}
    assert of2[at(85, 21)] == of2[at(85, 35)] == of2[at(94, 43)]
    assert of2[at(40, 40)] == of2[at(40, 28)]
    assert of2[at(120, 10)] == of2[at(125, 65)] and of2[at(113, 105)] != of2[at(120, 10)]   # 1 px and 3 px between them


@pytest.mark.parametrize("threads", [False, True])
def test_progress_counts_every_hole_and_its_interrupt_stops_the_fill(small_parallel, monkeypatch, threads):
    if threads:
        monkeypatch.setattr(E, "_can_fork", lambda: False)
    img, mask = _picture(), _near_holes()
    seen = []
    E.exemplar_fill(img, mask, workers=2, progress=lambda i, n: seen.append((i, n)))
    n = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)[0] - 1
    assert seen[-1] == (n, n) and all(a <= b for (a, _), (b, _) in zip(seen, seen[1:]))

    class Interrupted(Exception):
        pass

    def interrupt(i, n):
        raise Interrupted()
    with pytest.raises(Interrupted):
        E.exemplar_fill(img, mask, workers=2, progress=interrupt)
    assert not multiprocessing.active_children()


def test_a_failing_worker_is_reported(small_parallel, monkeypatch):
    def broken(job, i):
        raise ZeroDivisionError("hole %d" % i)
    monkeypatch.setattr(E, "_hole_steps", broken)
    with pytest.raises((RuntimeError, ZeroDivisionError), match="ZeroDivisionError|hole"):
        E.exemplar_fill(_picture(), _near_holes(), workers=2)
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("threads", [False, True])
def test_an_interrupt_ends_a_wedged_worker_promptly(small_parallel, monkeypatch, threads):
    """A worker stuck in a hole (a wedged library call) does not hold the caller: the caller still hears
    ``progress`` every ``PROGRESS_EVERY_S``, so the host's interrupt is raised there; a worker process is then
    killed after ``STOP_WAIT_S`` (no child left), a worker thread left behind."""
    import threading
    import time
    release = threading.Event()
    monkeypatch.setattr(E, "PROGRESS_EVERY_S", 0.2)
    monkeypatch.setattr(E, "STOP_WAIT_S", 1.0)
    if threads:
        monkeypatch.setattr(E, "_can_fork", lambda: False)
    monkeypatch.setattr(E, "_hole_steps", lambda job, i: release.wait(3600) if threads else time.sleep(3600))

    class Interrupted(Exception):
        pass
    calls = []

    def interrupt(i, n):
        calls.append(i)
        if len(calls) >= 3:
            raise Interrupted()
    t0 = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            E.exemplar_fill(_picture(), _near_holes(), workers=2, progress=interrupt)
        assert time.monotonic() - t0 < 30 and set(calls) == {0}
        assert not multiprocessing.active_children()
    finally:
        release.set()


def _fill_in_pool_worker(_):
    E.PARALLEL_MIN_AREA = 1
    img, mask = _picture(), _near_holes()
    return E._can_fork(), E.exemplar_fill(img, mask, workers=2)[0], E.exemplar_fill(img, mask, workers=1)[0]


def test_inside_a_pool_worker_the_workers_are_threads():
    with multiprocessing.get_context("fork").Pool(1) as pool:   # a daemonic process may not have children
        forks, par, ser = pool.map(_fill_in_pool_worker, [0])[0]
    assert not forks
    assert np.array_equal(par.view(np.uint32), ser.view(np.uint32))


def test_fill_workers_record():
    rec = SETTINGS["fill_workers"]
    assert rec.default == 0 and rec.min == 0
    assert E.auto_workers(0) >= 1 and E.auto_workers(3) == 3
    with pytest.raises(SettingError, match="fill_workers"):
        stages.fill(_picture(32, 32), np.zeros((32, 32), bool), "exemplar", workers=-1)
