"""The progress estimate (``dloral.progress``) on known timings: the start-up of the first window is not
counted as per-frame time."""
import pytest

from dloral.progress import RateEstimate, clock


def test_rate_from_frames_finished_not_start_up():
    # window 4, 100 s of start-up, then 10 s per frame: windows end at 140, 180, 220 s
    r = RateEstimate(window=4, total=60)
    seen = {}
    for w, t in enumerate((140.0, 180.0, 220.0)):
        for k in range(4):
            n = 4 * w + k + 1
            seen[n] = r.update(n, t + 0.01 * k)
    assert seen[1] == (None, None) and seen[4] == (None, None) and seen[7] == (None, None)
    spf, left = seen[8]
    assert spf == pytest.approx(10.0) and left == pytest.approx(52 * 10.0)
    spf, left = seen[12]
    assert spf == pytest.approx(10.0) and left == pytest.approx(48 * 10.0)
    # the old rule (elapsed / frames) on the first frame: 140 s/frame and 59 * 140 s left
    assert 140.0 / 1 * 59 > 10 * left


def test_last_short_window_and_unknown_total():
    r = RateEstimate(window=4, total=6)
    r.update(4, 50.0)
    assert r.update(5, 70.0) == (None, None)
    assert r.update(6, 70.0) == (pytest.approx(10.0), 0.0)
    r = RateEstimate(window=2)
    r.update(2, 10.0)
    assert r.update(4, 16.0) == (pytest.approx(3.0), None)


def test_clock():
    assert clock(59.6) == "1:00" and clock(733) == "12:13" and clock(3723) == "1:02:03"
