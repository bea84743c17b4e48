"""Film-mask restoration nodes, part 2 (V3 schema): print layers, layout, print export, registration
check and the archival record. Export and Record write a NEW numbered folder per run
(``subfolder_00001``, ``_00002``, ... as the host's SaveImage counts files), staged under a hidden name
and moved in when complete, so an earlier run is never overwritten and an interrupted one leaves nothing.
Their errors name folders relative to ComfyUI's output folder (``output/...``), never the server's paths.
"""
import json

from comfy_api.latest import io

from ..restoration.artefacts import PrintCanvas, PrintLayers
from ..restoration.layers import layout, separate, simulate
from ..restoration.outputs import JobResult, comfy_workflow, node_previews, write_job, write_print
from ..restoration.pipeline import Stages
from ..restoration.printfile import check_layout
from ..restoration.previews import heat, layers_preview
from ..restoration.register import registration_check, registration_summary
from ..restoration.settings import SETTINGS
from ._host import progress_bar
from ..restoration.tensors import image_array, image_batch, mask_array, mask_batch
from ._resto_io import check_subfolder, comfyui_version, numbered_output, output, output_ui, relative_errors
from ._settings_io import validator, widget, widgets

CAT = "Atelier/Restoration"
RestoCtx, DamageMapT = io.Custom("RESTO_CTX"), io.Custom("DAMAGE_MAP")
RegionTableT, MaskLayers = io.Custom("REGION_TABLE"), io.Custom("MASK_LAYERS")
CTX_TIP = "Scale of the scan (from Restoration Context or Load Scan)."
SUBFOLDER_TIP = ("Folder inside ComfyUI's output folder; each run writes a new numbered folder {subfolder}_00001, "
                 "_00002, ... (never overwrites).")


SEPARATE = ("white_mode", "amount_mm", "min_feature_mm", "white_on_black")
LAYOUT = ("margin_mm", "arm_mm", "line_mm", "mirror")


def _layout_fits(values):
    """The fiducials inside the margin. The dpi comes with ctx (a link): checked here at 600 dpi when all three
    sizes are given, and again at the scan's dpi when the node runs."""
    sizes = [values.get(k) for k in LAYOUT[:3]]
    if None not in sizes:
        check_layout(600.0, *sizes)


def _subfolder_inside(values):
    r = check_subfolder(values.get("subfolder"))
    if r is not True:
        raise ValueError(r)


class AtelierBilayerSeparate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierBilayerSeparate", display_name="Atelier Bilayer Separate (colour + white)", category=CAT,
            description="Split the fill into a colour layer (RGBA, A = footprint) and a white plate. same_pattern "
                        "(default, the paper's behaviour) puts white exactly under the colour; choke/spread shrink/"
                        "grow it; minimal_white prints white only where ink alone cannot reach the target.",
            inputs=[io.Image.Input("filled", tooltip="The filled image."),
                    io.Image.Input("original", tooltip="The painting under the film (the scan)."),
                    io.Mask.Input("mask", tooltip="Fill footprint (used_mask of Fill)."),
                    RestoCtx.Input("ctx", tooltip=CTX_TIP),
                    *widgets(SETTINGS, SEPARATE)],
            outputs=[MaskLayers.Output("layers", display_name="layers", tooltip="Colour RGBA + white plate at image size (for Print Layout)."),
                     io.Image.Output("layers_preview", display_name="layers_preview", tooltip="Colour layer on a checkerboard beside the white plate."),
                     io.Image.Output("simulated_view", display_name="simulated_view", tooltip="Predicted appearance of the film on the painting."),
                     io.Mask.Output("white", display_name="white", tooltip="White ink coverage (1 = full).")])

    validate_inputs = validator(SETTINGS, SEPARATE)

    @classmethod
    def execute(cls, filled, original, mask, ctx, white_mode, amount_mm, min_feature_mm, white_on_black):
        f, o = image_array(filled, "filled"), ctx.check(image_array(original, "original"), "original")
        lay = separate(f, o, mask_array(mask, o.shape[:2], "mask"), ctx.scale, white_mode, amount_mm,
                       min_feature_mm=min_feature_mm, white_on_black=white_on_black)
        prev, sim = layers_preview(lay.color_rgba, lay.white), simulate(o, lay)
        return output((lay, image_batch(prev), image_batch(sim), mask_batch(lay.white)), [prev, sim], "layers")


class AtelierPrintLayout(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierPrintLayout", display_name="Atelier Print Layout (fiducials)", category=CAT,
            description="Place both layers on a canvas with margins and identical fiducials (4 crosshairs + an "
                        "asymmetric key) and mirror both if the film is printed on the side that faces the painting.",
            inputs=[MaskLayers.Input("layers", tooltip="From Bilayer Separate."),
                    RestoCtx.Input("ctx", tooltip=CTX_TIP),
                    *widgets(SETTINGS, LAYOUT)],
            outputs=[MaskLayers.Output("layers_out", display_name="layers", tooltip="Both layers on the print canvas (for Print Export and the "
                                                         "record)."),
                     io.Image.Output("preview", display_name="preview", tooltip="The canvas: colour on a checkerboard beside the white plate."),
                     io.String.Output("fiducials_mm", display_name="fiducials_mm", tooltip="Fiducial centres in mm on the canvas (JSON), after "
                                                              "mirroring.")])

    validate_inputs = validator(SETTINGS, LAYOUT, extra=_layout_fits)

    @classmethod
    def execute(cls, layers, ctx, margin_mm, arm_mm, line_mm, mirror):
        if not isinstance(layers, PrintLayers):
            raise ValueError("layers already went through Print Layout (or do not come from Bilayer Separate)")
        laid = layout(layers, ctx.scale, margin_mm, arm_mm, line_mm, mirror)
        prev = layers_preview(laid.color_rgba, laid.white)
        return output((laid, image_batch(prev), json.dumps(laid.fiducials)), [prev], "layout")


def _check_laid(layers):
    if not isinstance(layers, PrintCanvas):
        raise ValueError("layers must come from Print Layout (the print files and the record document the canvas)")
    return layers


class AtelierPrintExport(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierPrintExport", display_name="Atelier Print Export (TIFF + PDF)", category=CAT,
            description="Write the print files into a new numbered folder in the output folder: 16-bit colour RGBA "
                        "TIFF and 8-bit white TIFF (255 = full white ink) at 1:1 with the DPI tag, and a PDF at "
                        "physical size.",
            inputs=[MaskLayers.Input("layers", tooltip="From Print Layout."),
                    RestoCtx.Input("ctx", tooltip=CTX_TIP),
                    io.String.Input("subfolder", default="atelier_restoration/print", tooltip=SUBFOLDER_TIP)],
            outputs=[io.String.Output("folder", display_name="folder", tooltip="The numbered folder written by this run."),
                     io.String.Output("files_json", display_name="files_json", tooltip="The files with size, dpi and SHA-256 (JSON).")],
            is_output_node=True)

    @classmethod
    def validate_inputs(cls, subfolder=None):
        return check_subfolder(subfolder)

    @classmethod
    def execute(cls, layers, ctx, subfolder):
        laid = _check_laid(layers)
        pbar = progress_bar(100)
        with relative_errors():  # an error names output/..., never the server's folders
            staged = numbered_output(subfolder)
            with staged as tmp:
                files, _ = write_print(tmp, laid, ctx.dpi, preview_side=None,
                                       progress=lambda i, n: pbar.update_absolute(int(100 * i / n), 100))
        return io.NodeOutput(str(staged.final), json.dumps(files))


class AtelierRegistrationCheck(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierRegistrationCheck", display_name="Atelier Registration Check", category=CAT,
            description="Align a capture of the painting with the mask applied (or a test print) to the original "
                        "capture (ECC on L*) and report the misregistration in micrometres with a residual map.",
            inputs=[io.Image.Input("capture", tooltip="Capture with the mask applied."),
                    io.Image.Input("original", tooltip="The original capture."),
                    RestoCtx.Input("ctx", tooltip=CTX_TIP),
                    widget(SETTINGS["motion"])],
            outputs=[io.Image.Output("residual", display_name="residual", tooltip="|ΔL*| after alignment (yellow = 10+)."),
                     io.Float.Output("rms_um", display_name="rms_um", tooltip="RMS misregistration over the image in µm."),
                     io.Float.Output("max_um", display_name="max_um", tooltip="Largest misregistration in µm."),
                     io.String.Output("warp_json", display_name="warp_json", tooltip="The fitted warp, shift and statistics (JSON).")])

    validate_inputs = validator(SETTINGS, ("motion",))

    @classmethod
    def execute(cls, capture, original, ctx, motion):
        r = registration_check(image_array(capture, "capture"), image_array(original, "original"), ctx.scale, motion)
        vis = heat(r["residual"], 10.0)
        return output((image_batch(vis), r["rms_um"], r["max_um"], json.dumps(registration_summary(r))), [vis],
                      "register")


class AtelierRestorationRecord(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtelierRestorationRecord", display_name="Atelier Restoration Record", category=CAT,
            description="Write the archival record into a new numbered folder in the output folder: print files, "
                        "region table (CSV/JSON), label map, previews, manifest.json and index.html with the "
                        "parameters, versions, counts, timings, file hashes and this ComfyUI workflow.",
            inputs=[io.Image.Input("original", tooltip="The scan."),
                    io.Image.Input("filled", tooltip="The filled image."),
                    io.Mask.Input("used_mask", tooltip="Fill footprint (used_mask of Fill)."),
                    RegionTableT.Input("regions", tooltip="Region table (after Fill / Fill QA for the full columns)."),
                    MaskLayers.Input("layers", tooltip="From Print Layout."),
                    RestoCtx.Input("ctx", tooltip="Scale and scan info."),
                    io.String.Input("subfolder", default="atelier_restoration/record", tooltip=SUBFOLDER_TIP),
                    widget(SETTINGS["count_q"]),
                    DamageMapT.Input("damage_map", optional=True,
                                     tooltip="Adds the response maps, detection parameters and user masks to the record.")],
            outputs=[io.String.Output("record_folder", display_name="record_folder", tooltip="The numbered record folder written by this run.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo], is_output_node=True)

    validate_inputs = validator(SETTINGS, ("count_q",), extra=_subfolder_inside, more=("subfolder",))

    @classmethod
    def execute(cls, original, filled, used_mask, regions, layers, ctx, subfolder, count_q, damage_map=None):
        o = image_array(original, "original")
        job = JobResult.assemble(o, image_array(filled, "filled"), mask_array(used_mask, o.shape[:2], "used_mask"),
                                 regions,
                                 layers, ctx, count_q, damage_map)
        hidden = getattr(cls, "hidden", None)
        workflow = comfy_workflow(getattr(hidden, "prompt", None), getattr(hidden, "extra_pnginfo", None))
        pbar = progress_bar(100)
        st = Stages(("export", "previews", "record"), lambda i, n, name, f: pbar.update_absolute(int(100 * (i + f) / n)))
        with relative_errors():  # an error names output/..., never the server's folders
            staged = numbered_output(subfolder)
            with staged as tmp:
                manifest = write_job(tmp, job, {"source": "ComfyUI nodes"}, stages=st, workflow=workflow,
                                     extra={"comfyui_version": comfyui_version()})
        return io.NodeOutput(str(staged.final), ui=output_ui(staged.final, node_previews(manifest)))


NODES = [AtelierBilayerSeparate, AtelierPrintLayout, AtelierPrintExport, AtelierRegistrationCheck,
         AtelierRestorationRecord]
