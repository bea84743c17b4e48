"""Host plumbing shared by the restoration nodes: previews shown on the node, the input folder, and
numbered output folders. No restoration rule lives here (IMAGE/MASK <-> numpy: ``restoration.tensors``)."""
import logging
import os
import time

from ..restoration.fileio import StagedFolder, safe_path
from ..restoration.previews import save_previews
from ._host import output_directory

log = logging.getLogger("atelier")


def ui_images(arrays, prefix):
    """Save (H, W, 3) float previews as PNGs in the host temp folder; the "ui" dict shown on the node."""
    try:
        import folder_paths
        tmp = folder_paths.get_temp_directory()
        os.makedirs(tmp, exist_ok=True)
    except Exception:
        return {"images": []}
    names = save_previews(tmp, arrays, prefix, time.time_ns() % 10 ** 12)
    return {"images": [{"filename": n, "subfolder": "", "type": "temp"} for n in names]}


def output(values, previews, prefix):
    """``io.NodeOutput`` of ``values`` with ``previews`` ((H, W, 3) float arrays) shown on the node."""
    from comfy_api.latest import io
    return io.NodeOutput(*values, ui=ui_images(previews, prefix))


def input_directory():
    import folder_paths
    return folder_paths.get_input_directory()


def checked(rule, *args, **kw):
    """A core check as ``validate_inputs`` answers: True, or the check's message (input, value, what is allowed)."""
    try:
        rule(*args, **kw)
    except ValueError as exc:
        return str(exc)
    return True


def check_subfolder(subfolder):
    """True, or the message for a subfolder that leaves the output folder (for ``validate_inputs``)."""
    r = True if subfolder is None else checked(safe_path, output_directory(), subfolder)
    return r if r is True else f"subfolder: {r}"


def numbered_output(subfolder):
    """A :class:`StagedFolder` that becomes ``output/subfolder_NNNNN`` (next free number) when complete."""
    return StagedFolder(safe_path(output_directory(), subfolder), numbered=True)


def output_ui(folder, names):
    """The "ui" dict listing files of an output folder (shown on the node)."""
    rel = os.path.relpath(str(folder), output_directory())
    return {"images": [{"filename": n, "subfolder": rel, "type": "output"} for n in names]}


def torch_device():
    """The host's compute device (the harmonic fill runs there); CPU when the host cannot say."""
    try:
        import comfy.model_management as mm
        return mm.get_torch_device()
    except Exception:
        return "cpu"


def comfyui_version():
    try:
        import comfyui_version as v
        return v.__version__
    except Exception:
        return None
