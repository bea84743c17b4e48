"""Command line: ``python -m magcache schedule|presets ...`` (run from the repository root).

    python -m magcache schedule --preset wan2.1_t2v_1.3B --steps 50 --thresh 0.12 --k 2 --retention 0.2
    python -m magcache schedule --curve my_curve.json --steps 30 --start-step 5
    python -m magcache presets

``schedule`` prints one JSON object: ``cond_skipped``, ``uncond_skipped`` (0-based steps),
``computed_calls``, ``total_calls``, ``expected_speedup`` and the settings used. thresh, k and
retention default to the preset's recommended values (``--curve``: 0.12, 2, 0.2). Bad
arguments print a message naming the argument and exit with code 2.
"""
import argparse
import json
import sys

from .curve import parse_curve
from .presets import get_preset, list_presets
from .schedule import MagCacheConfig, plan_schedule


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _parser():
    p = _Parser(prog="python -m magcache", description="MagCache schedule preview and presets.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    s = sub.add_parser("schedule", help="print the skip schedule as JSON")
    src = s.add_mutually_exclusive_group()
    src.add_argument("--preset", help="preset name (see 'presets'); default wan2.1_t2v_1.3B")
    src.add_argument("--curve", metavar="FILE", help="a curve JSON file (from calibration) instead of a preset")
    s.add_argument("--steps", type=int, required=True, help="sampler steps S (>= 1)")
    s.add_argument("--thresh", type=float, help="accumulated error threshold, [0, 10]")
    s.add_argument("--k", type=int, help="most consecutive skips per branch, >= 0")
    s.add_argument("--retention", type=float, help="fraction of first calls always computed, [0, 1]")
    s.add_argument("--start-step", type=int, help="steps before this always compute (replaces retention)")
    s.add_argument("--end-step", type=int, help="steps from this on always compute (-1: no end)")
    s.add_argument("--protect-last", type=int, default=0, help="always compute the last N steps")
    s.add_argument("--split-step", type=int, help="Wan2.2 A14B: first low-noise step (default: the "
                   "preset's, scaled to --steps)")
    s.add_argument("--split-mode", choices=["t2v", "i2v"], help="Wan2.2 A14B retention rule")
    s.add_argument("--step-range", type=int, nargs=2, metavar=("FIRST", "LAST"),
                   help="plan only this inclusive range of global steps (one sampler of a split run)")
    sub.add_parser("presets", help="list the presets with their calibration length and defaults")
    return p


def _schedule(a):
    if a.curve:
        try:
            with open(a.curve, "r", encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise ValueError(f"--curve: cannot read {a.curve!r} ({exc.strerror})") from None
        curve, defaults, name, preset = parse_curve(text, what=f"--curve {a.curve}"), {}, None, None
    else:
        name = a.preset or "wan2.1_t2v_1.3B"
        preset = get_preset(name)
        curve, defaults = preset.ratios, dict(preset.defaults)
    kw = {"thresh": a.thresh if a.thresh is not None else defaults.get("thresh", 0.12),
          "k": a.k if a.k is not None else defaults.get("k", 2),
          "retention": a.retention if a.retention is not None else defaults.get("retention", 0.2),
          "start_step": a.start_step, "end_step": a.end_step, "protect_last": a.protect_last,
          "split_step": a.split_step}
    if a.split_step is None and preset is not None and preset.split_step is not None:
        kw["split_step"] = preset.split_for(a.steps)
    mode = a.split_mode or (preset.split_mode if preset is not None else None)
    if mode:
        kw["split_mode"] = mode
    config = MagCacheConfig(**kw).validate()
    sch = plan_schedule(curve, a.steps, config, step_range=tuple(a.step_range) if a.step_range else None)
    out = sch.to_dict()
    out.update({"preset": name, "curve": a.curve, "thresh": config.thresh, "k": config.k,
                "retention": config.retention, "start_step": config.start_step, "end_step": config.end_step,
                "protect_last": config.protect_last, "split_step": config.split_step})
    print(json.dumps(out))


def _presets():
    for n in list_presets():
        p = get_preset(n)
        d = p.defaults
        print(f"{n:28s} branches={p.branches} calib_steps={p.calib_steps:<3d} "
              f"thresh={d['thresh']} k={d['k']} retention={d['retention']}  {p.description}")


def main(argv=None):
    parser = _parser()
    a = parser.parse_args(argv)
    if a.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if a.command == "schedule":
            if a.steps < 1:
                raise ValueError(f"--steps: {a.steps} is not allowed; use an integer >= 1")
            _schedule(a)
        else:
            _presets()
    except ValueError as exc:
        print(f"python -m magcache {a.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
