"""Model families: what the one engine needs to know of a diffusion transformer, as data.

A :class:`Family` says where the block stack starts and ends (for the host's hooks), which
shipped curves fit it and how to pick among them, how many guidance branches it runs, and which
:class:`~magcache.schedule.RuleVariant` of the official rule its official script applies. The
rule itself lives once, in :class:`~magcache.schedule.RuleState`; a family only names a variant.

The variants, as each official script writes them (public repository Zehong-Ma/MagCache @df81cb1,
and Zehong-Ma/ComfyUI-MagCache @47bdd2a ``nodes.py`` for the families that only it covers):

========================  ======  ==========================  ==========  =========================
family                    test    retention                   resampling  extra
========================  ======  ==========================  ==========  =========================
wan (Wan2.1/2.2)          ``<``   calls ``int(2*S*r)``        nearest     Wan2.2 A14B phase rule
qwen_image                ``<``   calls ``int(2*S*r)``        nearest     (MagCache4QwenImage)
flux, flux_kontext        ``<=``  steps ``int(r*S + 0.5)``    nearest     step ``round(j*27/(S-1))
                                                                          == 11`` never skips
hunyuan_video             ``<=``  steps ``int(r*S)``          nearest     single branch
chroma, hunyuan_video1.5  ``<``   steps ``int(S*r)`` (both    floor       ComfyUI node only (no
                                  branches)                               research script)
flux2, hidream, lumina2,  ``<``   calls ``int(2*S*r)``        nearest     no official curve:
ltxv                                                                      calibrate (the Wan rule)
========================  ======  ==========================  ==========  =========================

Decisions are per branch and per row everywhere (the ComfyUI node ORs batched cond/uncond
decisions and counts batched calls as one; this engine keeps the per-branch rule of the
research scripts and the pack's per-row plan, :class:`~magcache.state.CallPlan`).

Host hints (:attr:`Family.image_models`, :attr:`Family.stack`) name the host's ``unet_config``
``image_model`` values and its ``patches_replace["dit"]`` block names; nothing here imports the host.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .schedule import RuleVariant, WAN_RULE

__all__ = ["Family", "BlockStack", "FAMILIES", "get_family", "list_families", "family_of_preset", "detect_family",
           "FLUX_RULE", "HUNYUAN_RULE", "COMFY_NODE_RULE", "QWEN_RULE", "WAN_RULE"]

#: MagCache4FLUX / MagCache4FLUX_Kontext (lines 327-332): ``<=``, ``cnt >= int(r*S + 0.5)``, never skip the step
#: mapping to calibration step 11 of 28.
FLUX_RULE: RuleVariant = RuleVariant("flux", strict=False, retention_counts="steps", retention_rounding="half_up",
                                     never_skip=(28, 11))
#: MagCache4HunyuanVideo (lines 90-96): ``<=``, ``cnt >= int(r*S)``, one branch (embedded guidance).
HUNYUAN_RULE: RuleVariant = RuleVariant("hunyuan_video", strict=False, retention_counts="steps")
#: MagCache4QwenImage (lines 206-213): the Wan rule on calls (cond and uncond are separate calls).
QWEN_RULE: RuleVariant = RuleVariant("qwen_image")
#: ComfyUI-MagCache node (Chroma, HunyuanVideo-1.5; lines 1211-1216, 527, 1002): ``<``, steps ``int(S*r)``,
#: floor index mapping; kept per branch (the node's OR of batched branches is not reproduced).
COMFY_NODE_RULE: RuleVariant = RuleVariant("comfy_node", strict=True, retention_counts="steps", resampling="floor")


@dataclass(frozen=True)
class BlockStack:
    """Where the cached block stack runs in the host's model (hints for the host's hooks).

    Attributes:
        first: the host's ``dit`` patch key of the stack's first block, e.g. ``("double_block", 0)``.
        last: the kind of the last block's patch (``"double_block"`` or ``"single_block"``; its
            index is the model's last of that kind).
        layout: the token layout leaving the last block: ``"img"`` (image tokens only),
            ``"txt_img"`` (``cat(txt, img)``: Flux, Chroma; the residual is the image part,
            ``out[:, len(txt):]``) or ``"img_txt"`` (``cat(img, txt)``: HunyuanVideo; ``out[:, :len(img)]``).
        dit_patches: False when the host's model offers no ``dit`` block patches (HiDream,
            Lumina2 / Z-Image in ComfyUI v0.8.0): the host must wrap the module lists named in
            ``modules`` instead.
        modules: the diffusion model's block-list attributes, in order.
    """
    first: Tuple[str, int] = ("double_block", 0)
    last: str = "double_block"
    layout: str = "img"
    dit_patches: bool = True
    modules: Tuple[str, ...] = ("blocks",)


@dataclass(frozen=True)
class Family:
    """A model family (a small description the one engine reads).

    Attributes:
        name: ``"wan"``, ``"flux"``, ...
        title: for people.
        variant: the :class:`~magcache.schedule.RuleVariant` of its official script.
        presets: shipped curve names, the default first (empty: calibrate, see
            :class:`~magcache.store.CurveStore`).
        branches: 1 when the official script runs one call per step (embedded guidance: FLUX,
            HunyuanVideo), 2 for separate cond / uncond calls; None: from the curve (calibrated).
        image_models: the host's ``unet_config["image_model"]`` values of the family.
        model_classes: the host's diffusion-model class names (a hint; detection uses ``image_model``).
        stack: :class:`BlockStack`.
        steps_switch: ``(steps, preset)``: above ``steps`` sampler steps use ``preset`` instead of the
            default (HunyuanVideo-1.5: 40-step curve above 20 steps, as the ComfyUI node).
        resolution_presets: ``(height, preset)``: a run whose latent-pixel height is ``height`` uses
            ``preset`` (HunyuanVideo 544p).
        note: one line for people (where the rule and curve come from).
    """
    name: str
    title: str
    variant: RuleVariant
    presets: Tuple[str, ...] = ()
    branches: Optional[int] = None
    image_models: Tuple[str, ...] = ()
    model_classes: Tuple[str, ...] = ()
    stack: BlockStack = field(default_factory=BlockStack)
    steps_switch: Optional[Tuple[int, str]] = None
    resolution_presets: Tuple[Tuple[int, str], ...] = ()
    note: str = ""

    @property
    def calibrate_only(self) -> bool:
        """No shipped curve: the curve is recorded during the first full run."""
        return not self.presets

    def preset_for(self, steps: Optional[int] = None, height: Optional[int] = None) -> Optional[str]:
        """The shipped curve for a run of ``steps`` steps at pixel ``height`` (None: no shipped curve)."""
        if not self.presets:
            return None
        for h, name in self.resolution_presets:
            if height is not None and height == h:
                return name
        if self.steps_switch is not None and steps is not None and steps > self.steps_switch[0]:
            return self.steps_switch[1]
        return self.presets[0]

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready description (for the host and the preview)."""
        v = self.variant
        return {"name": self.name, "title": self.title, "presets": list(self.presets), "branches": self.branches,
                "image_models": list(self.image_models), "model_classes": list(self.model_classes),
                "stack": {"first": list(self.stack.first), "last": self.stack.last, "layout": self.stack.layout,
                          "dit_patches": self.stack.dit_patches, "modules": list(self.stack.modules)},
                "rule": {"name": v.name, "strict": v.strict, "retention_counts": v.retention_counts,
                         "retention_rounding": v.retention_rounding, "resampling": v.resampling,
                         "never_skip": list(v.never_skip) if v.never_skip else None},
                "note": self.note}


_WAN_PRESETS = ("wan2.1_t2v_1.3B", "wan2.1_t2v_14B", "wan2.1_i2v_480p_14B", "wan2.1_i2v_720p_14B", "wan2.1_vace_1.3B",
                "wan2.1_vace_14B", "wan2.2_t2v_A14B", "wan2.2_i2v_A14B", "wan2.2_ti2v_5B_t2v", "wan2.2_ti2v_5B_i2v")
_FLUX_STACK = BlockStack(("double_block", 0), "single_block", "txt_img", True, ("double_blocks", "single_blocks"))

FAMILIES: Dict[str, Family] = {f.name: f for f in (
    Family("wan", "Wan2.1 / Wan2.2", WAN_RULE, _WAN_PRESETS, 2, ("wan2.1",), ("WanModel", "VaceWanModel"),
           BlockStack(("double_block", 0), "double_block", "img", True, ("blocks",)),
           note="MagCache4Wan2.1 / 2.2 magcache_generate.py; Wan2.2 A14B phase rule from the preset"),
    Family("flux", "FLUX.1-dev", FLUX_RULE, ("flux",), 1, ("flux",), ("Flux",), _FLUX_STACK,
           note="MagCache4FLUX/magcache_flux.py; embedded guidance, one call per step"),
    Family("flux_kontext", "FLUX.1-Kontext-dev", FLUX_RULE, ("flux_kontext",), 1, ("flux",), ("Flux",), _FLUX_STACK,
           note="rule of MagCache4FLUX_Kontext (= FLUX's); curve of the ComfyUI node (20 steps); the host sees "
                "a Flux model: Kontext is told by its reference latents"),
    Family("chroma", "Chroma", COMFY_NODE_RULE, ("chroma",), 2, ("chroma",), ("Chroma",), _FLUX_STACK,
           note="ComfyUI-MagCache node only (no research script): '<', retention on steps, floor mapping"),
    Family("qwen_image", "Qwen-Image", QWEN_RULE, ("qwen_image",), 2, ("qwen_image",),
           ("QwenImageTransformer2DModel",),
           BlockStack(("double_block", 0), "double_block", "img", True, ("transformer_blocks",)),
           note="rule of MagCache4QwenImage; curve of the ComfyUI node (40 steps)"),
    Family("hunyuan_video", "HunyuanVideo", HUNYUAN_RULE, ("hunyuan_video", "hunyuan_video_544p"), 1,
           ("hunyuan_video",), ("HunyuanVideo",),
           BlockStack(("double_block", 0), "single_block", "img_txt", True, ("double_blocks", "single_blocks")),
           resolution_presets=((544, "hunyuan_video_544p"),),
           note="MagCache4HunyuanVideo/magcache_sample_video.py; 720p curve, 544p curve at height 544"),
    Family("hunyuan_video1.5", "HunyuanVideo-1.5", COMFY_NODE_RULE, ("hunyuan_video1.5", "hunyuan_video1.5_40steps"),
           2, ("hunyuan_video",), ("HunyuanVideo",),
           BlockStack(("double_block", 0), "single_block", "img_txt", True, ("double_blocks", "single_blocks")),
           steps_switch=(20, "hunyuan_video1.5_40steps"),
           note="ComfyUI-MagCache node only; 20-step curve, 40-step curve above 20 steps (host: unet_config "
                "has vision_in_dim)"),
    Family("flux2", "FLUX.2", WAN_RULE, (), None, ("flux2",), ("Flux",), _FLUX_STACK,
           note="no official curve: calibrated during the first run"),
    Family("hidream", "HiDream-I1", WAN_RULE, (), None, ("hidream",), ("HiDreamImageTransformer2DModel",),
           BlockStack(("double_stream_block", 0), "single_stream_block", "img", False,
                      ("double_stream_blocks", "single_stream_blocks")),
           note="no official curve: calibrated during the first run; the host model has no dit patches (the host "
                "wraps each block of both lists)"),
    Family("lumina2", "Lumina2 / Z-Image", WAN_RULE, (), None, ("lumina2",), ("NextDiT",),
           BlockStack(("layer", 0), "layer", "img", False, ("layers",)),
           note="no official curve; the host model has no dit patches (wrap the layers list)"),
    Family("ltxv", "LTX-Video", WAN_RULE, (), None, ("ltxv",), ("LTXVModel",),
           BlockStack(("double_block", 0), "double_block", "img", True, ("transformer_blocks",)),
           note="no official curve: calibrated during the first run"),
)}


def list_families() -> List[str]:
    """Names of all families."""
    return list(FAMILIES)


def get_family(family: Union[str, Family]) -> Family:
    """The :class:`Family` named ``family`` (a Family passes through); ValueError listing the names otherwise."""
    if isinstance(family, Family):
        return family
    if family not in FAMILIES:
        raise ValueError(f"family: {family!r} is not a known family; allowed: {', '.join(FAMILIES)}")
    return FAMILIES[family]


def family_of_preset(preset: str) -> Family:
    """The family whose curves include ``preset`` (ValueError when none)."""
    for f in FAMILIES.values():
        if preset in f.presets:
            return f
    raise ValueError(f"preset: {preset!r} belongs to no family")


def detect_family(model: Optional[Mapping[str, Any]]) -> Family:
    """The family of a model description: the host's ``unet_config`` (``image_model`` and the fields
    it reads), optionally with ``"kontext": True`` (the host saw reference latents on a Flux model).

    Rules: ``image_model`` ``"wan2.1"`` or no ``image_model`` (a Wan config as the node and the web route
    send it: ``dim``, ``in_dim``, ``model_type``) -> wan;
    ``"flux"`` -> flux (flux_kontext with ``kontext``); ``"hunyuan_video"`` with ``vision_in_dim`` ->
    hunyuan_video1.5, without -> hunyuan_video; other values by :attr:`Family.image_models`.
    ValueError naming ``model`` for anything else.
    """
    if not isinstance(model, Mapping):
        raise ValueError(f"model: {model!r} is not a model description (the host's unet_config)")
    im = model.get("image_model")
    if im is None:
        return FAMILIES["wan"]
    if im == "flux":
        return FAMILIES["flux_kontext" if model.get("kontext") else "flux"]
    if im == "hunyuan_video":
        return FAMILIES["hunyuan_video1.5" if model.get("vision_in_dim") else "hunyuan_video"]
    for f in FAMILIES.values():
        if im in f.image_models:
            return f
    known = sorted({m for f in FAMILIES.values() for m in f.image_models})
    raise ValueError(f"model: image_model {im!r} has no MagCache family; supported: {', '.join(known)}")
