"""Restoration's settings table and scale: the records are what the widgets declare, the core configs and
the CLI refuse what the records refuse (naming the input), and Scale converts with known values."""
import math

import pytest

from atelier_settings import SettingError
from restoration.detect import DetectConfig
from restoration.pipeline import PipelineConfig
from restoration.printfile import check_layout
from restoration.regions import RegionConfig
from restoration.review import ReviewConfig
from restoration.scale import Scale
from restoration.settings import LOAD_SCAN, SETTINGS
from restoration.synth import SynthConfig

# the issue's four API values, as (node, input, value)
ISSUE_CASES = [("AtelierDamageDetect", "crack_low", 500.0), ("AtelierDamageDetect", "split_min_length_mm", -5.0),
               ("AtelierRegionTable", "max_fill_share", 5.0), ("AtelierPrintLayout", "margin_mm", 1000.0)]


def test_scale_known_values():
    s = Scale(300)
    assert s.dpi == 300.0 and isinstance(s.dpi, float)
    assert s.mm_to_px(1) == pytest.approx(11.811, abs=5e-4)
    assert s.mm_to_px(25.4) == 300.0 and s.px_to_mm(300) == pytest.approx(25.4, rel=1e-15)
    assert s.whole_px(1) == 12 and s.whole_px(0.01) == 0 and s.whole_px(0.01, 2) == 2
    assert s.px_area_to_mm2(300 * 300) == pytest.approx(25.4 ** 2, rel=1e-14)
    assert s.mm2_to_px_area(25.4 ** 2) == pytest.approx(90000.0, rel=1e-14)
    assert Scale(600).mm_per_px == pytest.approx(0.0423333, abs=1e-7)
    assert Scale(600).coarser(20).dpi == 30.0      # a subsampled view may lie below the user range
    assert Scale.of(s) is s and Scale.of(600) == Scale(600.0)


@pytest.mark.parametrize("bad", [10, 49.9, 20001, 1e6, float("nan"), float("inf"), "600", True, None])
def test_scale_refuses_a_bad_dpi_naming_it(bad):
    with pytest.raises(SettingError) as e:
        Scale(bad)
    assert e.value.param == "dpi" and str(e.value).startswith("dpi (--dpi): ")


def test_scale_arithmetic_is_the_replaced_inline_one():
    """Bit-identical to the conversions it replaced (so records, hashes and decisions are unchanged)."""
    for dpi in (72, 150.0, 299.7, 600, 1200.5):
        s = Scale(dpi)
        assert s.mm_per_px == 25.4 / float(dpi)
        for n in (0, 1, 7, 12345):
            assert s.px_area_to_mm2(n) == float(n) * (25.4 / float(dpi)) ** 2
            assert s.px_to_mm(n) == n * (25.4 / float(dpi))
        for mm in (0.04, 0.085, 1.5, 50.0):
            assert s.mm_to_px(mm) == mm * float(dpi) / 25.4
            assert s.whole_px(mm, 1) == max(1, int(round(mm * float(dpi) / 25.4)))


@pytest.mark.parametrize("build,param", [
    (lambda: DetectConfig(crack_low=500.0), "crack_low"),
    (lambda: DetectConfig(split_min_length_mm=-5.0), "split_min_length_mm"),
    (lambda: ReviewConfig(max_fill_share=5.0), "max_fill_share"),
    (lambda: PipelineConfig(margin_mm=1000.0), "margin_mm"),
    (lambda: check_layout(600.0, 1000.0), "margin_mm"),
    (lambda: RegionConfig(viewing_distance_mm=10.0), "viewing_distance_mm"),
    (lambda: SynthConfig(width=32), "width"),
    (lambda: PipelineConfig(count_q=0.0), "count_q"),
    (lambda: DetectConfig(tile=32), "tile"),
])
def test_core_configs_refuse_what_the_records_refuse(build, param):
    with pytest.raises(SettingError) as e:
        build()
    assert e.value.param == param and str(e.value).startswith(SETTINGS[param].label + ": ")


def test_core_defaults_are_the_records():
    d, r, v, p = DetectConfig(), RegionConfig(), ReviewConfig(), PipelineConfig()
    for cfg, names in ((d, DetectConfig.RECORDS), (r, ("viewing_distance_mm", "registration_tol_um", "tile")),
                       (v, ReviewConfig.RECORDS)):
        for n in names:
            assert getattr(cfg, n) == SETTINGS[n].default, n
    for field, rec in PipelineConfig.RECORDS.items():
        assert getattr(p, field) == SETTINGS[rec].default, field
    assert (SynthConfig().width, SynthConfig().height, SynthConfig().dpi) == \
        (SETTINGS["width"].default, SETTINGS["height"].default, SETTINGS["dpi"].default)


def test_cross_field_rules_name_both_settings():
    with pytest.raises(ValueError, match=r"^crack_low=13 is above crack_high=12: the hysteresis low threshold"):
        DetectConfig(crack_low=13.0, crack_high=12.0)
    with pytest.raises(ValueError, match=r"^ground_seed_de=20 is above ground_grow_de=14"):
        DetectConfig(ground_seed_de=20.0)


@pytest.mark.parametrize("flag,value,param", [
    ("--crack-low", "500", "crack_low"), ("--split-min-length-mm", "-5", "split_min_length_mm"),
    ("--max-fill-share", "5", "max_fill_share"), ("--margin-mm", "1000", "margin_mm"),
    ("--dpi", "10", "dpi"), ("--tile", "20000", "tile"), ("--white-mode", "thick", None),
])
def test_cli_flags_refuse_with_the_records_message(flag, value, param, tmp_path, capsys):
    from restoration.__main__ import main
    assert main(["--sample", "--out", str(tmp_path / "o"), flag, value]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: argument " + flag), err
    if param is not None:
        assert SETTINGS[param].label + f": {SETTINGS[param].kind(value)!r}" in err, err
    assert not (tmp_path / "o").exists()


def test_cli_size_is_checked_by_the_width_and_height_records(tmp_path, capsys):
    from restoration.__main__ import main
    assert main(["--sample", "--out", str(tmp_path / "o"), "--size", "32x512"]) == 2
    assert "width (--width): 32 is out of range; use an integer in [64, 16384]" in capsys.readouterr().err


def _restoration_nodes(defs):
    return {k: v for k, v in defs.items() if k in RESTORATION_NODES}


RESTORATION_NODES = ("AtelierRestorationLoadScan", "AtelierRestorationContext", "AtelierSyntheticDamage",
                     "AtelierDamageDetect", "AtelierDamageMapEdit", "AtelierRegionTable", "AtelierRestorationFill",
                     "AtelierFillQA", "AtelierColourCount", "AtelierBilayerSeparate", "AtelierPrintLayout",
                     "AtelierPrintExport", "AtelierRegistrationCheck", "AtelierRestorationRecord")


def test_every_restoration_widget_is_its_record():
    """The node definitions (tests/data/node_defs.json, as the host serves them) against the records: every
    widget named like a record has the record's default, bounds, choices and tooltip, and every record is
    some node's widget."""
    from _workflows import load_defs
    nodes = _restoration_nodes(load_defs())
    assert sorted(nodes) == sorted(RESTORATION_NODES)
    seen = set()
    kinds = {int: "INT", float: "FLOAT", str: "STRING", bool: "BOOLEAN"}
    for node, d in nodes.items():
        table = LOAD_SCAN if node == "AtelierRestorationLoadScan" else SETTINGS
        for section in ("required", "optional"):
            for name, spec in d["input"].get(section, {}).items():
                if name not in table:
                    continue
                s, opts = table[name], spec[1]
                seen.add(name)
                where = f"{node}.{name}"
                assert opts.get("default") == s.default and opts.get("tooltip") == s.help, where
                if s.choices is not None:
                    options = spec[0] if isinstance(spec[0], list) else opts.get("options")
                    assert list(options) == list(s.choices), where
                    continue
                assert spec[0] == kinds[s.kind], where
                if s.kind in (int, float):
                    assert (opts.get("min"), opts.get("max")) == (s.min, s.max), where
                    assert math.isclose(opts.get("step", 1), s.widget_step() or 1) or s.widget_step() is None, where
    assert seen == set(SETTINGS), sorted(set(SETTINGS) - seen)
