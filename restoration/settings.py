"""Restoration's settings, declared once (:class:`~atelier_settings.SettingsTable`).

Every setting a user gives the restoration nodes (their widgets and ``validate_inputs``) and
``python -m restoration`` (its flags) is a record of :data:`SETTINGS`: name (the node input and the config
field), CLI flag, default, bounds or choices and help. The core's config classes
(:class:`~restoration.detect.DetectConfig`, :class:`~restoration.regions.RegionConfig`,
:class:`~restoration.review.ReviewConfig`, :class:`~restoration.pipeline.PipelineConfig`,
:class:`~restoration.synth.SynthConfig`) take their defaults from it and check their values with it, and the
scale of a scan (:class:`~restoration.scale.Scale`) checks its dpi with the ``dpi`` record, so a bound, a
default or a message exists in one place. A bad value raises :class:`~atelier_settings.SettingError`
naming the input and the flag.

Rules beyond one setting (``crack_low <= crack_high``, a tile of 0 or at least 64 px, the fiducials inside
the margin, the ground colour's syntax) are checked by the core functions named in the records' help.

A leaf module (no torch, no other restoration module): the choice lists live here and the modules that use
them import them.
"""
from __future__ import annotations

try:
    from ..atelier_settings import Setting, SettingError, SettingsTable  # type: ignore[import-not-found]
except ImportError:  # the core imported as a top-level package (tests, ``python -m restoration``)
    from atelier_settings import Setting, SettingError, SettingsTable

__all__ = ["SETTINGS", "LOAD_SCAN", "FILL_METHODS", "CLI_FILL_METHODS", "WHITE_MODES", "MOTIONS", "TILE",
           "MIN_TILE", "check_tile", "Setting", "SettingError", "SettingsTable"]

FILL_METHODS = ("exemplar", "harmonic", "telea", "ns", "patch", "external")
CLI_FILL_METHODS = tuple(m for m in FILL_METHODS if m != "external")  # external needs an IMAGE from a model
WHITE_MODES = ("same_pattern", "choke", "spread", "minimal_white", "none")
MOTIONS = ("translation", "euclidean", "affine", "homography")
TILE = 1024          # default tile of detection, fill and QA (px); results do not depend on it (tests)
MIN_TILE = 64        # a tile is 0 (untiled) or at least this

_ids_tip = "Region ids (from the table / record) to {}, comma-separated, e.g. 3,7,12."

SETTINGS = SettingsTable("Atelier Restoration", (
    # the scale (Restoration Context, Synthetic Damaged Painting, the CLI; restoration.scale.Scale)
    Setting("dpi", 600.0, "Scan resolution in pixels per inch at 1:1 (600 = 42.3 µm per pixel).",
            min=50.0, max=20000.0, step=1.0),
    # synthetic test scan (Synthetic Damaged Painting, ``--sample``; the CLI gives width x height as --size)
    Setting("seed", 0, "Generator seed (deterministic).", min=0, max=2 ** 31 - 1),
    Setting("width", 1536, "Width in px.", min=64, max=16384, step=64),
    Setting("height", 1024, "Height in px.", min=64, max=16384, step=64),
    # Damage Detect (DetectConfig)
    Setting("ground_color", "auto",
            "Colour of the exposed ground as R,G,B in 0..1 (e.g. 0.86,0.80,0.68), or 'auto' (estimated from the "
            "loss candidates: regions with an edge all round and a flat interior; none found = no losses). A given "
            "colour is used as given (tolerance: ground_tolerance_de).", flag="--ground"),
    Setting("ground_tolerance_de", 5.0, "ΔE00 around a ground colour you give within which pixels seed a loss and a "
            "loss matches the ground (used only with a given ground_color).", min=0.5, max=50.0, step=0.5),
    Setting("crack_low", 6.0, "Crack hysteresis low threshold (L* units).", min=0.0, max=100.0, step=0.5),
    Setting("crack_high", 12.0, "Crack hysteresis high threshold (L* units).", min=0.0, max=100.0, step=0.5),
    Setting("light_low", 10.0, "Light-defect hysteresis low (L*).", min=0.0, max=100.0, step=0.5),
    Setting("light_high", 15.0, "Light-defect hysteresis high (L*).", min=0.0, max=100.0, step=0.5),
    Setting("ground_seed_de", 7.0, "ΔE00 to the ground that seeds a loss.", min=0.0, max=100.0, step=0.5),
    Setting("ground_grow_de", 14.0, "ΔE00 to the ground up to which a loss grows.", min=0.0, max=100.0, step=0.5),
    Setting("loss_contrast_de", 6.0, "A loss must differ from its 3 px ring by more than this ΔE00.",
            min=0.0, max=100.0, step=0.5),
    Setting("split_min_length_mm", 50.0, "Support splits must span at least this length (mm).",
            min=1.0, max=5000.0, step=1.0),
    Setting("tile", TILE, "Tile size in px for large scans (0 = untiled, else at least 64); results are identical.",
            min=0, max=16384, step=64),
    # Damage Map Edit
    Setting("fill_loss", True, "Fill losses to the ground."),
    Setting("fill_small_defect", True, "Fill small light defects (scratches, abrasion)."),
    Setting("fill_craquelure", False, "Fill craquelure (usually left as patina)."),
    Setting("fill_support_split", False, "Fill support splits (structural; usually not)."),
    Setting("fill_user", True, "Fill the user-added mask."),
    # Region Table (RegionConfig, ReviewConfig)
    Setting("viewing_distance_mm", 500.0, "Regions narrower than 1 arcmin at this distance are marked invisible.",
            min=50.0, max=20000.0, step=10.0),
    Setting("registration_tol_um", 100.0, "Regions narrower than twice this are flagged and not filled unless "
            "accepted (below_registration).", min=0.0, max=5000.0, step=5.0),
    Setting("accept_ids", "", _ids_tip.format("fill although listed for review or skipped"), flag="--accept"),
    Setting("reject_ids", "", _ids_tip.format("never fill"), flag="--reject"),
    Setting("min_confidence", 0.6, "Regions less confident than this go to review.", min=0.0, max=1.0, step=0.05),
    Setting("max_fill_mm2", 4.0, "Regions larger than this (mm^2) go to review.", min=0.0, max=1e6, step=0.5),
    Setting("max_fill_share", 0.005, "Regions above this share of the picture go to review.",
            min=0.0, max=1.0, step=0.001),
    Setting("large_min_confidence", 0.85, "Regions above max_fill_mm2 or max_fill_share are filled only at this "
            "confidence or above; below it they go to review (1 = every large region to review).",
            min=0.0, max=1.0, step=0.05),
    # Restoration Fill
    Setting("method", "exemplar", "exemplar (default): continue lines and texture from the undamaged picture nearby "
            "(blended best-matching pieces, rim first); harmonic: smooth membrane (GPU capable); telea/ns: OpenCV; "
            "patch: copy one matching place per hole (holes over 256 px get harmonic); external: use external_fill "
            "inside the mask.",
            flag="--fill", choices=FILL_METHODS),
    Setting("grow_px", 1, "Grow the mask first so anti-aliased edges are absorbed.", min=0, max=32),
    Setting("fill_workers", 0, "Workers of the exemplar fill: independent holes are filled at the same time, in "
            "processes on Linux (threads elsewhere). 0 = one per CPU this process may use; 1 = one after another. "
            "The fill is the same bit for bit whatever the number.", min=0, max=256),
    Setting("external_model", "", "Name of the model that made external_fill (goes into the record)."),
    # Fill QA, Colour Count, Record
    Setting("edge_de", 3.0, "Flag regions whose fill differs from its edge ring by more than this ΔE00.",
            min=0.0, max=100.0, step=0.1),
    Setting("q", 1.0, "Merge colours closer than this ΔE00.", min=0.05, max=20.0, step=0.05),
    Setting("count_q", 1.0, "ΔE00 merge threshold for the colour count.", min=0.05, max=20.0, step=0.05),
    # Bilayer Separate
    Setting("white_mode", "same_pattern", "How the white plate follows the colour footprint.", choices=WHITE_MODES),
    Setting("amount_mm", 0.0, "Choke/spread distance in mm (>= 0).", flag="--white-amount-mm",
            min=0.0, max=5.0, step=0.01),
    Setting("min_feature_mm", 0.0, "Remove parts narrower than this (0 = off; see the research note).",
            min=0.0, max=5.0, step=0.01),
    Setting("white_on_black", False, "Allow white under very dark targets (L* < 15)."),
    # Print Layout
    Setting("margin_mm", 10.0, "Margin around the image for the fiducials.", min=2.0, max=200.0, step=0.5),
    Setting("arm_mm", 3.0, "Crosshair arm length.", min=0.5, max=50.0, step=0.1),
    Setting("line_mm", 0.1, "Crosshair line width.", min=0.02, max=2.0, step=0.01),
    Setting("mirror", True, "Mirror both layers (print on the film side facing the painting)."),
    # Registration Check
    Setting("motion", "homography", "Motion model of the alignment.", choices=MOTIONS),
))

#: Load Scan's dpi: 0 reads the resolution from the file; any other value must be a ``dpi`` of :data:`SETTINGS`.
LOAD_SCAN = SettingsTable("Atelier Load Scan", (
    Setting("dpi", 0.0, "0 = read the resolution from the file; otherwise this value wins.",
            min=0.0, max=SETTINGS["dpi"].max, step=1.0),
))


def check_tile(tile: int) -> int:
    """``tile`` checked by its record (0..16384 px) and the rule 0 (untiled) or at least :data:`MIN_TILE` px;
    a :class:`~atelier_settings.SettingError` naming ``tile (--tile)`` otherwise."""
    t: int = SETTINGS["tile"].check(tile)
    if 0 < t < MIN_TILE:
        raise SETTINGS["tile"].error(tile, f"is below {MIN_TILE} (give 0 for untiled)")
    return t
