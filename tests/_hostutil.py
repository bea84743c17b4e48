"""Helpers for host-tier tests: tiny Wan models loaded by the real host and sampled
through the host's own KSampler path (``nodes.common_ksampler``).

Only import this after the ``comfy_dir`` fixture has put the host on sys.path.
"""
import torch

import comfy.sd
import comfy.model_management
import nodes as host_nodes

from tinywan.build import random_state_dict

TEXT_DIM = 4096


def load_tiny_wan(variant="t2v", seed=0, **kw):
    """A tiny random Wan2.1 (T2V or I2V) ModelPatcher, auto-detected by the host
    (the ``wan21_<variant>`` family of ``_families``, the builder every family shares)."""
    import _families
    return _families.build(f"wan21_{variant}", seed=seed, **kw)


def text_cond(seed, length=8, extra=None):
    """A CONDITIONING list with a random T5-width context of `length` tokens."""
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(1, length, TEXT_DIM, generator=g)
    return [[ctx, dict(extra or {})]]


def i2v_extra(frames=3, h=16, w=16, seed=123):
    """Conditioning extras that make a tiny I2V Wan run (CLIP vision + concat latent)."""
    g = torch.Generator().manual_seed(seed)

    class _ClipOut:  # the host reads .penultimate_hidden_states
        pass

    clip = _ClipOut()
    clip.penultimate_hidden_states = torch.randn(1, 257, 1280, generator=g)
    return {"clip_vision_output": clip,
            "concat_latent_image": torch.randn(1, 16, frames, h, w, generator=g) * 0.1}


def empty_latent(frames=3, h=16, w=16):
    return {"samples": torch.zeros(1, 16, frames, h, w)}


def ksample(model, positive, negative, steps=10, cfg=1.0, seed=0, sampler="euler",
            scheduler="simple", latent=None, **kw):
    """Run the host's KSampler path and return the output latent tensor."""
    latent = latent or empty_latent()
    (out,) = host_nodes.common_ksampler(model, seed, steps, cfg, sampler, scheduler,
                                        positive, negative, latent, **kw)
    return out["samples"]


def count_block_calls(model):
    """Attach a counter to the first transformer block without touching the model:
    returns (counter_dict, patched_clone). Counts rows that ran block 0, per call."""
    counter = {"calls": 0, "rows": 0}
    m = model.clone()

    def patch(args, extra):
        counter["calls"] += 1
        counter["rows"] += args["img"].shape[0]
        return extra["original_block"](args)

    m.set_model_patch_replace(patch, "dit", "double_block", 0)
    return counter, m


def state_fingerprint(model):
    """A fingerprint of a ModelPatcher's mutable host-visible state (options, patches, weights)."""
    import copy
    opts = copy.copy(model.model_options)
    sd = model.model.diffusion_model.state_dict()
    w = float(sum(v.double().abs().sum() for v in sd.values()))
    return {
        "transformer_options_keys": sorted(opts.get("transformer_options", {}).keys()),
        "wrappers": sorted(model.wrappers.keys()) if hasattr(model, "wrappers") else None,
        "object_patches": sorted(model.object_patches.keys()),
        "patches": len(model.patches),
        "weights_sum": w,
    }


def load_trained_wan(path=None):
    """The trained tiny Wan (tinywan/weights) loaded by the host; ``(model, metadata)``."""
    from tinywan.weights import load_trained_state_dict
    sd, meta = load_trained_state_dict(path)
    model = comfy.sd.load_diffusion_model_state_dict(sd)
    assert model is not None, "host did not detect the trained tiny Wan"
    return model, meta


def prompt_cond(prompt):
    """A CONDITIONING with the tiny Wan's fixed text embedding of ``prompt`` (its vocabulary)."""
    from tinywan.data import encode_prompt
    return [[encode_prompt(prompt)[None], {}]]


def host_latent_to_rgb01(samples):
    """A host Wan LATENT [B, 16, F, H, W] -> RGB [B, 3, F, 2H, 2W] in [0, 1] via the tiny 'VAE'."""
    from tinywan import vae
    return vae.to_unit(vae.decode(vae.from_host_latent(samples.float())))
