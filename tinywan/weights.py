"""Loading the shipped trained tiny Wan (``tinywan/weights/tiny_wan_t2v.safetensors``)."""
from __future__ import annotations

import json
import pathlib

TRAINED_PATH = pathlib.Path(__file__).resolve().parent / "weights" / "tiny_wan_t2v.safetensors"


def load_trained_state_dict(path=None):
    """``(state_dict, metadata)`` of the trained model; state-dict keys are the host's Wan keys
    (load it with ``comfy.sd.load_diffusion_model_state_dict`` or ``TinyWan.from_state_dict``).
    JSON-valued metadata fields (config, vocab, training, ...) are decoded."""
    from safetensors import safe_open
    path = pathlib.Path(path) if path is not None else TRAINED_PATH
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r}: no trained tiny Wan there; "
                                "train one with `python -m tinywan.train`")
    sd = {}
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        for k in f.keys():
            sd[k] = f.get_tensor(k)
    for k, v in list(meta.items()):
        try:
            meta[k] = json.loads(v)
        except (TypeError, ValueError):
            pass
    return sd, meta


def load_trained(path=None):
    """The trained ``TinyWan`` (float32, eval mode)."""
    from .model import TinyWan
    sd, _ = load_trained_state_dict(path)
    return TinyWan.from_state_dict(sd).eval()
