"""Host plumbing shared by the restoration nodes: IMAGE/MASK tensors <-> numpy, previews shown on the
node, the input folder, and numbered output folders. No restoration rule lives here."""
import logging
import os
import time

import numpy as np
import torch

from ..restoration.fileio import StagedFolder, safe_path
from ..restoration.previews import nearest
from ..restoration.scanio import to_uint
from ._host import output_directory

log = logging.getLogger("atelier")


def img_np(image, name="image"):
    """First frame of an IMAGE batch (B, H, W, C) as (H, W, 3) float32 numpy."""
    if image is None or image.ndim != 4 or image.shape[-1] < 3:
        raise ValueError(f"{name} must be an IMAGE [B,H,W,C] with C >= 3, got "
                         f"{None if image is None else tuple(image.shape)}")
    if image.shape[0] > 1:
        log.warning("atelier restoration: %s has a batch of %d; using the first image", name, image.shape[0])
    return np.ascontiguousarray(image[0, ..., :3].detach().cpu().float().numpy())


def mask_np(mask, shape, name):
    """A MASK ((B,) H, W) as (H, W) bool (> 0.5), checked against ``shape``; None stays None."""
    if mask is None:
        return None
    m = mask[0] if mask.ndim == 3 else mask
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"{name} has size {tuple(m.shape)}; the scan is {tuple(shape)} (H, W)")
    return m.detach().cpu().float().numpy() > 0.5


def to_image(arr):
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None]


def to_mask(m):
    return torch.from_numpy(np.asarray(m, np.float32))[None]


def ui_images(arrays, prefix):
    """Save (H, W, 3) float previews as PNGs in the host temp folder; the "ui" dict shown on the node."""
    try:
        import folder_paths
        from PIL import Image
        tmp = folder_paths.get_temp_directory()
        os.makedirs(tmp, exist_ok=True)
    except Exception:
        return {"images": []}
    out = []
    stamp = time.time_ns() % 10 ** 12
    for i, a in enumerate(arrays):
        name = f"atelier_{prefix}_{stamp}_{i}.png"
        Image.fromarray(to_uint(nearest(a), 8)).save(os.path.join(tmp, name), compress_level=1)
        out.append({"filename": name, "subfolder": "", "type": "temp"})
    return {"images": out}


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
