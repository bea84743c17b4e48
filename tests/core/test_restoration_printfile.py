"""Print canvas and print files in row strips: equal to the whole-canvas computation, bounded memory,
and files that read back (TIFF strips with ICC, a PDF checked by an independent minimal parser)."""
import re
import shutil
import subprocess
import tracemalloc
import zlib

import numpy as np
import pytest

from _restoration_util import small_sample
from restoration.export import export_layers, read_tiff
from restoration.fill import fill_image
from restoration.layers import layer_rows_fn, layout, separate
from restoration.printfile import canvas_geometry, canvas_rows, draw_marks, fiducials, write_print_files, write_tiff_rows
from restoration.scanio import to_uint
from restoration.settings import SETTINGS


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def parts():
    img, clean, gt, info = small_sample(0)
    m = (gt == 3) | (gt == 4)
    filled, used = fill_image(img, m)
    return img, filled, used


@pytest.mark.parametrize("dpi,margin,arm,mirror", [(600, 10.0, 3.0, True), (600, 10.0, 3.0, False),
                                                   (300, 2.0, 6.0, True), (1200, 3.0, 0.5, False)])
def test_fiducial_bands_equal_full_canvas_drawing(dpi, margin, arm, mirror):
    h, w = 150, 230
    ch, cw, off, marks, arm_px, lw = fiducials(h, w, dpi, margin, arm, 0.1)
    full = np.zeros((ch, cw), np.uint8)  # reference: every mark drawn once on the whole canvas
    draw_marks(full, marks, arm_px, lw)
    if mirror:
        full = full[:, ::-1]
    geom = canvas_geometry(h, w, dpi, margin, arm, 0.1, mirror)
    none = lambda y0, y1: (np.zeros((y1 - y0, w, 4), np.float32), np.zeros((y1 - y0, w), np.float32))
    for step in (1, 7, 64, ch):
        got = np.concatenate([canvas_rows(geom, none, r, min(ch, r + step))[1] for r in range(0, ch, step)])
        assert np.array_equal(got > 0, full > 0), step
    assert full.sum() > 0


@pytest.mark.parametrize("mode,amount,minf", [("same_pattern", 0, 0), ("choke", 0.2, 0), ("spread", 0.2, 0.1),
                                              ("minimal_white", 0, 0), ("same_pattern", 0, 0.3)])
@pytest.mark.parametrize("mirror", [True, False])
def test_streamed_canvas_equals_whole_canvas(parts, mode, amount, minf, mirror):
    img, filled, used = parts
    ref = layout(separate(filled, img, used, 600, mode, amount, min_feature_mm=minf), 600, mirror=mirror)
    h, w = used.shape
    geom = canvas_geometry(h, w, 600, mirror=mirror)
    rows = layer_rows_fn(filled, img, used, 600, mode, amount, min_feature_mm=minf)
    cw, ch = geom["canvas_px"]
    assert [cw, ch] == ref.canvas_px and geom["fiducials"] == ref.fiducials
    for step in (13, 100):
        parts_ = [canvas_rows(geom, rows, r, min(ch, r + step)) for r in range(0, ch, step)]
        assert np.array_equal(np.concatenate([p[0] for p in parts_]), ref.color_rgba)
        white = np.concatenate([p[1] for p in parts_])
        if mode == "minimal_white":
            # per-pixel float32 maths (sRGB -> linear via torch pow) run on arrays of other lengths: torch's
            # SIMD body/tail split moves results by at most an ulp; the 8-bit print values are unchanged
            assert np.abs(white - ref.white).max() <= 1e-6
            assert np.array_equal(to_uint(white, 8), to_uint(ref.white, 8))
        else:
            assert np.array_equal(white, ref.white)


def _pdf_objects(pdf):
    """Independent minimal reader: xref offsets must point at 'N 0 obj'; returns {N: (dict text, stream)}."""
    start = int(re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", pdf).group(1))
    assert pdf[start:start + 4] == b"xref"
    head, *lines = pdf[start:].split(b"trailer")[0].strip().split(b"\n")[1:]
    n0, cnt = map(int, head.split())
    objs = {}
    for i, line in enumerate(lines[1:], 1):
        off = int(line[:10])
        m = re.match(rb"(\d+) 0 obj\n(<<.*?>>)(\nstream\n)?", pdf[off:], re.S)
        assert m and int(m.group(1)) == i, f"xref entry {i} does not point at its object"
        stream = None
        if m.group(3):
            length = int(re.search(rb"/Length (\d+)", m.group(2)).group(1))
            s0 = off + m.end()
            stream = pdf[s0:s0 + length]
            assert pdf[s0 + length:s0 + length + 10] == b"\nendstream"
        objs[i] = (m.group(2), stream)
    assert len(objs) == cnt - 1
    return objs


def test_print_files_round_trip_and_pdf(parts, tmp_path):
    img, filled, used = parts
    laid = layout(separate(filled, img, used, 600), 600, mirror=True)
    files = export_layers(tmp_path, laid, 600)
    col, dpi = read_tiff(tmp_path / "layer_color_rgba.tif")
    wh, _ = read_tiff(tmp_path / "layer_white.tif")
    assert dpi == pytest.approx(600)
    assert np.array_equal(col, to_uint(laid.color_rgba, 16)) and np.array_equal(wh, to_uint(laid.white, 8))
    # sRGB ICC profile embedded in the colour TIFF
    import io
    import tifffile
    from PIL import ImageCms
    with tifffile.TiffFile(tmp_path / "layer_color_rgba.tif") as tf:
        icc = tf.pages[0].tags["InterColorProfile"].value
        assert tf.pages[0].rowsperstrip < col.shape[0]  # really written in strips
    assert "sRGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(bytes(icc))))
    assert next(f for f in files if f["role"] == "color_layer")["icc_embedded"] is True
    # the PDF, read by the parser above: two pages at physical size, images equal to the expected pages
    objs = _pdf_objects((tmp_path / "print_layers.pdf").read_bytes())
    ch, cw = wh.shape
    pages = [d for d, _ in objs.values() if b"/Type /Page " in d + b" " and b"/MediaBox" in d]
    assert len(pages) == 2
    for d in pages:
        box = [float(v) for v in re.search(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", d).groups()]
        assert box == pytest.approx([cw / 600 * 72, ch / 600 * 72], abs=1e-3)
    images = [(d, s) for d, s in objs.values() if b"/Subtype /Image" in d]
    a = laid.color_rgba[..., 3:]
    want1 = to_uint(laid.color_rgba[..., :3] * a + (1 - a), 8)
    got1 = np.frombuffer(zlib.decompress(images[0][1]), np.uint8).reshape(ch, cw, 3)
    got2 = np.frombuffer(zlib.decompress(images[1][1]), np.uint8).reshape(ch, cw)
    assert b"/DeviceRGB" in images[0][0] and b"/DeviceGray" in images[1][0]
    assert np.array_equal(got1, want1) and np.array_equal(got2, 255 - wh)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp or spool files left


def test_pdf_renders_in_poppler(parts, tmp_path):
    assert shutil.which("pdftoppm"), "poppler-utils (pdftoppm) not installed: scripts/setup.sh hosts installs it"
    img, filled, used = parts
    laid = layout(separate(filled, img, used, 600), 600, mirror=False)
    export_layers(tmp_path, laid, 600)
    subprocess.run(["pdftoppm", "-r", "600", "-f", "2", "-l", "2", "-gray", str(tmp_path / "print_layers.pdf"),
                    str(tmp_path / "p")], check=True, capture_output=True)
    from PIL import Image
    page = np.asarray(Image.open(next(tmp_path.glob("p*.pgm")))).astype(np.float64)
    want = 255.0 - to_uint(laid.white, 8)
    assert page.shape == want.shape  # page size at 600 dpi == the canvas in px
    # poppler smooths image edges when it scales, so compare content, not bits (measured r = 0.93)
    assert np.corrcoef(page.ravel(), want.ravel())[0, 1] > 0.85
    assert page[want == 0].mean() < 64 and page[want == 255].mean() > 200


def _traced_peak(tmp_path, ch, cw, rows):
    tmp_path.mkdir()
    geom = canvas_geometry(ch - 2 * 236, cw - 2 * 236, 600, mirror=True)  # 10 mm margins = 236 px
    assert geom["canvas_px"] == [cw, ch]
    w = geom["w"]
    tile = np.random.default_rng(0).uniform(0, 1, (rows, w, 4)).astype(np.float32)
    layer_rows = lambda y0, y1: (tile[: y1 - y0], tile[: y1 - y0, :, 3])
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        write_print_files(tmp_path, lambda r0, r1: canvas_rows(geom, layer_rows, r0, r1), ch, cw, 600, rows=rows,
                          preview_side=256)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_strip_writer_memory_does_not_grow_with_canvas_height(tmp_path):
    """Canvases of 1000 and 4000 rows (same width) written in 64-row strips: the traced peak (numpy
    allocations are traced) must not grow with the height, and stays far below the whole canvas's
    float32 layers (20 B/px)."""
    small = _traced_peak(tmp_path / "a", 1000, 1200, 64)
    big = _traced_peak(tmp_path / "b", 4000, 1200, 64)
    assert big < 1.25 * small, f"peak grew with height: {small / 1e6:.1f} MB -> {big / 1e6:.1f} MB"
    assert big < 4000 * 1200 * 20 / 10


def test_tiff_rows_writer_equals_array(tmp_path):
    a = np.random.default_rng(1).integers(0, 65535, (301, 77, 3), dtype=np.uint16)
    write_tiff_rows(tmp_path, "x.tif", lambda y0, y1: a[y0:y1], a.shape, a.dtype, 300, rows=32)
    b, dpi = read_tiff(tmp_path / "x.tif")
    assert np.array_equal(a, b) and dpi == pytest.approx(300)


@pytest.mark.parametrize("dpi", [300, 600, 1200])
def test_layout_check_keeps_every_mark_inside_the_margin(dpi):
    """Every (margin, arm, line) the check accepts draws no fiducial pixel over the image (the check is
    conservative by the line's half width and one pixel)."""
    from restoration.printfile import check_layout
    h, w = 120, 160
    none = lambda y0, y1: (np.zeros((y1 - y0, w, 4), np.float32), np.zeros((y1 - y0, w), np.float32))
    n_ok = n_bad = 0
    for margin in (2.0, 4.0, 6.2, 10.0):
        for line in (0.05, 0.1, 0.3):
            for arm_px in range(2, 80, 3):
                arm = arm_px * 25.4 / dpi
                geom = canvas_geometry(h, w, dpi, margin, arm, line, False)
                cw, ch = geom["canvas_px"]
                white = canvas_rows(geom, none, 0, ch)[1]
                off = geom["offset_px"]
                over = white[off:off + h, off:off + w].any()
                try:
                    check_layout(dpi, margin, arm, line)
                    assert not over, (margin, arm, line)
                    n_ok += 1
                except ValueError as exc:
                    if arm < SETTINGS["arm_mm"].min:  # below the widget's range: refused by the record first
                        assert str(exc).startswith("arm_mm (--arm-mm): ") and "out of range" in str(exc)
                        continue
                    assert "reaches into the image" in str(exc)
                    n_bad += 1
    assert n_ok > 20 and n_bad > 20
    with pytest.raises(ValueError, match="arm_mm=3 reaches into the image"):
        layout(separate(*[np.zeros((h, w, 3), np.float32)] * 2, np.zeros((h, w), bool), dpi), dpi, 2.0, 3.0, 0.1)
