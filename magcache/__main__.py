"""Command line: ``python -m magcache schedule|presets ...`` (run from the repository root).

    python -m magcache schedule --preset wan2.1_t2v_1.3B --steps 50 --thresh 0.12 --k 2 --retention 0.2
    python -m magcache schedule --curve my_curve.json --steps 30 --start-step 5
    python -m magcache presets

``schedule`` prints one JSON object: ``cond_skipped``, ``uncond_skipped`` (0-based steps),
``computed_calls``, ``total_calls``, ``expected_speedup`` and the settings used, through the
same resolver as the node and the web route (:func:`magcache.resolve.resolve`). Wan2.2 A14B
presets use the official phase rule with the official split (``split_step``/``split_source``
in the JSON, and a line on stderr), or ``--split-step`` / ``--shift``. thresh, k and
retention default to the preset's recommended values (``--curve``: 0.12, 2, 0.2). Bad
arguments print a message naming the argument and exit with code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn, Optional, Sequence

from .curve import Curve, parse_curve
from .families import list_families
from .presets import get_preset, list_presets
from .resolve import resolve
from .settings import SETTINGS

#: The rule's settings ``schedule`` takes as flags (``--steps`` is ``preview_steps``'s flag).
CLI_SETTINGS: tuple[str, ...] = ("thresh", "k", "retention", "start_step", "end_step", "protect_last", "split_step", "shift",
                "split_mode", "target_speedup")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m magcache", description="MagCache schedule preview and presets.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    s = sub.add_parser("schedule", help="print the skip schedule as JSON")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--preset", help="preset name (see 'presets'); default wan2.1_t2v_1.3B")
    src.add_argument("--curve", metavar="FILE", help="a curve JSON file (from calibration) instead of a preset")
    SETTINGS.add_arguments(s, ("preview_steps",))
    s._option_string_actions["--steps"].required = True
    # thresh, k, retention: None = the preset's recommendation (a curve file: the table's defaults)
    SETTINGS.add_arguments(s, CLI_SETTINGS, defaults={"thresh": None, "k": None, "retention": None})
    s.add_argument("--family", choices=list_families(),
                   help="the family whose rule a --curve file runs under (default wan); a preset has its own")
    s.add_argument("--step-range", type=int, nargs=2, metavar=("FIRST", "LAST"),
                   help="plan only this inclusive range of global steps (one sampler of a split run)")
    sub.add_parser("presets", help="list the presets with their calibration length and defaults")
    return p


def _schedule(a: argparse.Namespace) -> None:
    curve: Optional[Curve] = None
    if a.curve:
        try:
            with open(a.curve, "r", encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise ValueError(f"--curve: cannot read {a.curve!r} ({exc.strerror})") from None
        curve = parse_curve(text, what=f"--curve {a.curve}")
    r = resolve(a.preset or "wan2.1_t2v_1.3B", steps=a.preview_steps, custom_curve=curve, thresh=a.thresh, k=a.k,
                retention=a.retention, start_step=a.start_step, end_step=a.end_step,
                protect_last=a.protect_last, split_step=a.split_step, split_mode=a.split_mode, shift=a.shift,
                family=a.family if a.curve else None, target_speedup=a.target_speedup)
    sch = r.plan(step_range=tuple(a.step_range) if a.step_range else None)
    out = r.to_dict(sch)
    out.update({"curve": a.curve, "preset": None if a.curve else r.name})
    if r.config.split_step is not None:
        print(f"python -m magcache schedule: Wan2.2 {r.config.split_mode} phase rule, split at step "
              f"{r.config.split_step} ({r.split_source})", file=sys.stderr)
    print(json.dumps(out))


def _presets() -> None:
    for n in list_presets():
        p = get_preset(n)
        d = p.defaults
        print(f"{n:28s} family={p.family:<16s} branches={p.branches} calib_steps={p.calib_steps:<3d} "
              f"thresh={d['thresh']} k={d['k']} retention={d['retention']}  {p.description}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); the exit code (0, or 2 on a bad argument)."""
    parser = _parser()
    a = parser.parse_args(argv)
    if a.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if a.command == "schedule":
            _schedule(a)
        else:
            _presets()
    except ValueError as exc:
        print(f"python -m magcache {a.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
