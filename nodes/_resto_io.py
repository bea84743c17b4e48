"""Host plumbing shared by the restoration nodes: previews shown on the node, the input folder, and
numbered output folders. No restoration rule lives here (IMAGE/MASK <-> numpy: ``restoration.tensors``)."""
import contextlib
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
    """True, or the message for a subfolder that leaves the output folder (for ``validate_inputs``), with the
    server's folders written as ``output`` (:func:`host_relative`)."""
    r = True if subfolder is None else checked(safe_path, output_directory(), subfolder)
    return r if r is True else host_relative(f"subfolder: {r}")


def _host_folders():
    """(server path, name shown) of ComfyUI's output, input and temp folders, every spelling of each
    (as given, absolute, links resolved), longest first."""
    import folder_paths
    forms = {}
    for name, get in (("output", folder_paths.get_output_directory), ("input", folder_paths.get_input_directory),
                      ("temp", folder_paths.get_temp_directory)):
        try:
            d = get()
        except Exception:
            continue
        for form in (d, os.path.abspath(d), os.path.realpath(d)):
            if form and form != os.sep:
                forms.setdefault(form.rstrip(os.sep), name)
    return sorted(forms.items(), key=lambda kv: -len(kv[0]))


def host_relative(text):
    """``text`` with the server's output, input and temp folders written as ``output``, ``input``, ``temp``
    (``'/srv/comfy/output/rec/x.tif'`` -> ``'output/rec/x.tif'``): what a node's error may show a user."""
    for form, name in _host_folders():
        text = text.replace(form, name)
    return text


@contextlib.contextmanager
def relative_errors():
    """Errors raised inside (ValueError, OSError: a folder that cannot be made, a full disk) come out as one
    ValueError whose message names paths relative to ComfyUI's folders, never the server's absolute ones.
    Anything else (the host's interrupt included) passes through unchanged."""
    try:
        yield
    except (ValueError, OSError) as exc:
        raise ValueError(host_relative(str(exc))) from None


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
