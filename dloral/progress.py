"""Seconds per frame and time left, estimated from frames finished, not from the start-up.

Frames come out a window at a time (``window`` pairs per batch), all at once when the window ends, and the
first window also carries the start-up (the first UNet and VAE calls, page faults of fresh memory). The old
rule, elapsed / frames done, read "183 s/frame, ETA 12:13" on the first frame of a window-4 run that took
4 minutes in all. The rule here (:class:`RateEstimate`): the clock starts when the first window ends; the
rate is the time from then to the end of the latest finished window over the frames finished in between.
Until a second window has ended there is no estimate (``None``), rather than a wrong one.
"""
from dataclasses import dataclass, field
from typing import Optional, Tuple

__all__ = ["RateEstimate", "clock"]


@dataclass
class RateEstimate:
    """Feed :meth:`update` the count of frames finished and the time (seconds) after each frame."""
    window: int
    total: Optional[int] = None
    _t0: Optional[float] = field(default=None, repr=False)
    _n0: int = field(default=0, repr=False)
    spf: Optional[float] = None

    def update(self, done: int, now: float) -> Tuple[Optional[float], Optional[float]]:
        """``(seconds per frame, seconds left)`` after ``done`` frames at time ``now``; each None until known
        (seconds left also needs ``total``). Only the end of a window (``done`` a multiple of ``window``, or
        the last frame) moves the estimate: frames inside a window come out together."""
        if done % max(self.window, 1) == 0 or done == self.total:
            if self._t0 is None:
                self._t0, self._n0 = now, done
            elif done > self._n0:
                self.spf = (now - self._t0) / (done - self._n0)
        left = None
        if self.spf is not None and self.total:
            left = max(self.total - done, 0) * self.spf
        return self.spf, left


def clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour on."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"
