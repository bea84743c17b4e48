"""Tiny Wan2.1-architecture model for tests and demos (pure torch, no ComfyUI import).

- ``TinyWan`` / ``TinyWanConfig`` (``model``): the host's WanModel state-dict layout, split as
  ``embed`` -> ``run_blocks`` -> ``head_out`` so a cache can replace the block stack.
- ``random_state_dict`` / ``random_model`` (``build``): random weights the host detects as Wan2.1.
- ``load_trained`` / ``load_trained_state_dict`` (``weights``): the model trained here on
  procedural shape clips (``data``), decoded by a fixed linear "VAE" (``vae``).
- ``sample.sample`` / ``sample.flow_sigmas``: ComfyUI's euler + simple flow sampler with CFG
  (the module ``tinywan.sample``; the function is not re-exported so the module name stays usable).
- ``render``: latents to uint8 frames and PNG strips.
"""
from .model import TinyWan, TinyWanConfig, WanAux
from .build import random_state_dict, random_model
from .weights import TRAINED_PATH, load_trained, load_trained_state_dict
from .data import encode_prompt, encode_prompts, colour_shares, foreground_centroids
from . import data, render, sample, vae

__all__ = [
    "TinyWan", "TinyWanConfig", "WanAux", "random_state_dict", "random_model", "TRAINED_PATH",
    "load_trained", "load_trained_state_dict", "sample", "encode_prompt",
    "encode_prompts", "colour_shares", "foreground_centroids", "data", "render", "vae",
]
