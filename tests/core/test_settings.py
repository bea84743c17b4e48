"""The one settings record (``atelier_settings``) and every CLI flag built from a settings table.

The record's checks are tested on known values; then every flag that a CLI takes from a table is walked
(below its min, above its max, a wrong type, not a choice): each exits 2 with one message naming the flag,
and nothing is written.
"""
import argparse
import contextlib
import io

import pytest

from atelier_settings import Setting, SettingError, SettingsTable


def test_record_checks_known_values():
    s = Setting("tile", 768, "help", min=0, max=4096, multiple=8)
    assert s.flag == "--tile" and s.label == "tile (--tile)" and s.kind is int
    assert s.check(0) == 0 and s.check(4096) == 4096
    for bad, why in ((-8, "out of range"), (4104, "out of range"), (100, "not a multiple of 8"),
                     (8.0, "not an integer"), (True, "not a number"), ("8", "not a number"), (None, "missing")):
        with pytest.raises(SettingError) as e:
            s.check(bad)
        assert e.value.param == "tile" and str(e.value).startswith("tile (--tile): ") and why in str(e.value)
        assert str(e.value).endswith("use an integer in [0, 4096] in steps of 8")
    f = Setting("thresh", 0.12, min=0.0, max=1.0)
    assert f.check(1) == 1.0 and isinstance(f.check(1), float)
    for bad in (float("nan"), float("inf"), -0.001, 1.001):
        with pytest.raises(SettingError, match=r"^thresh \(--thresh\): .*use a number in \[0, 1\]$"):
            f.check(bad)
    c = Setting("mode", "a", choices=("a", "b"))
    assert c.check("b") == "b"
    with pytest.raises(SettingError, match="choose one of a, b"):
        c.check("c")
    b = Setting("mirror", True)
    assert b.parse("no") is False and b.parse("1") is True
    with pytest.raises(SettingError):
        b.check(1)
    n = Setting("split", None, kind=int, nullable=True, min=0)
    assert n.check(None) is None and n.parse("none") is None and n.parse("3") == 3
    with pytest.raises(TypeError):
        Setting("x", None)                       # no kind
    with pytest.raises(SettingError):
        Setting("y", 5, min=0, max=4)           # a default that breaks its own rule fails at import


def test_table_parse_query_and_argparse():
    t = SettingsTable("T", (Setting("a", 1, min=0, max=3), Setting("b", 0.5, min=0.0, max=1.0),
                            Setting("c", False)))
    assert list(t) == ["a", "b", "c"] and t.defaults() == {"a": 1, "b": 0.5, "c": False}
    assert t.parse_query({"a": "2"}) == {"a": 2, "b": 0.5, "c": False}
    with pytest.raises(SettingError) as e:
        t.parse_query({"b": "x"})
    assert e.value.param == "b"
    with pytest.raises(SettingError, match="unknown setting"):
        t.check({"z": 1})
    assert t.check({"a": None}, skip_none=True) == {"a": None}
    p = argparse.ArgumentParser()
    t.add_arguments(p)
    ns = p.parse_args(["--a", "3", "--no-c"])
    assert t.from_args(ns) == {"a": 3, "b": 0.5, "c": False}
    with pytest.raises(ValueError, match="duplicate"):
        SettingsTable("D", (Setting("a", 1), Setting("a", 2)))


def _bad_values(s):
    if s.choices is not None:
        return [("not a choice", "atelier-no-such-choice")]
    if s.kind is bool or s.kind is str:
        return []
    eps = 1 if s.kind is int else 1e-3
    out = [("wrong type", "not-a-number")]
    if s.min is not None:
        out.append(("below min", str(s.min - eps)))
    if s.max is not None:
        out.append(("above max", str(s.max + eps)))
    return out


def _cli_cases():
    """(cli name, main, argv before the flag, table, flag names) of every CLI built from a table."""
    import dloral.__main__ as dloral_cli
    import magcache.__main__ as magcache_cli
    from dloral.settings import SETTINGS as DLORAL
    from magcache.settings import SETTINGS as MAGCACHE
    yield ("magcache schedule", magcache_cli.main, ["schedule", "--preset", "wan2.1_t2v_1.3B", "--steps", "20"],
           MAGCACHE, magcache_cli.CLI_SETTINGS + ("preview_steps",))
    yield ("dloral upscale", dloral_cli.main, ["upscale", "in", "--out", "OUT", "--weights", "w", "--checkpoint",
                                               "c", "--comfyui", "x"], DLORAL, tuple(DLORAL))
    import restoration.__main__ as restoration_cli
    from restoration.settings import SETTINGS as RESTORATION
    yield ("restoration", restoration_cli.main, ["--sample", "--out", "OUT"], RESTORATION,
           restoration_cli.CLI_SETTINGS)


def test_every_cli_flag_is_bounded_by_its_record(tmp_path):
    walked, failures = 0, []
    for cli, main, argv, table, names in _cli_cases():
        argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
        for name in names:
            s = table[name]
            for what, value in _bad_values(s):
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    try:
                        rc = main(argv + [s.flag, value])
                    except SystemExit as exc:
                        rc = exc.code
                walked += 1
                text = err.getvalue()
                if rc != 2 or s.flag not in text:
                    failures.append(f"{cli} {s.flag} {what} ({value}): rc {rc}: {text[-300:]}")
    assert walked > 60, walked
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "out").exists()       # nothing was written
