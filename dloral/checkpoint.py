"""Loading the official DLoRAL ``model.pkl`` safely and converting it to a small safetensors file.

The official checkpoint is a ``torch.save`` dict (see ``docs``/research notes):

- ``lora_rank_unet_quality`` / ``lora_rank_unet_consistency``: int ranks;
- ``unet_lora_{encoder,decoder,others}_modules_{quality,consistency}``: six lists of diffusers
  module names, one per adapter ``default_{group}_{kind}``;
- ``state_dict_unet``: the whole PEFT-wrapped UNet (``<m>.base_layer.*``, ``<m>.lora_A.<adapter>.weight``,
  ``<m>.lora_B.<adapter>.weight``, plain keys for untargeted modules);
- ``state_dict_bpp``: the whole CFR network, of which inference uses SpyNet and the retrieval attention.

At inference all six adapters are active with weight 1 and PEFT's scaling ``alpha / r`` (alpha is
PEFT's default 8, not stored), so each targeted weight becomes ``W + s_q B_q A_q + s_c B_c A_c``. The
converter stores that sum exactly as one LoRA of rank ``r_q + r_c`` per module (``up = [s_q B_q | s_c B_c]``,
``down = [A_q; A_c]``, ``alpha = r_q + r_c`` so the host's own scale is 1), in the host's LDM key naming,
plus the 8-channel input convolution (merged, and its base weight and factors apart) and the CFR weights.
Run with the ranks as a split (``lora.lora_module(split=...)``) the stacked factors add each adapter's term on
its own, in PEFT's order and float rounding.

Base UNet weights (every non-LoRA tensor of ``state_dict_unet``; the official loader takes them all from
the checkpoint) are not stored: they come from the user's SD2.1-base checkpoint. So that a different base
model is noticed, the converter records a **fingerprint** of each of them (its shape and 8 values at fixed
positions, ``base_fingerprint``) and :func:`check_base` compares the user's UNet against it when the
weights are applied, naming every tensor that differs beyond the rounding of the user's dtype. A base
tensor the checkpoint *changed* is kept whole in the converted file (``DLoRALWeights.base``, applied as a
replacement): ``conv_in`` always (8 input channels instead of 4), and, when the converter is given the
SD2.1-base weights (``base=``, CLI ``--base``), every other tensor that differs from them.
"""
import hashlib
import json
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from collections.abc import Mapping, Sequence
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch

from .keymap import diffusers_to_ldm, layout_from_names
from .lora import lora_module, lora_scale

__all__ = ["DLoRALWeights", "ADAPTERS", "load_official", "convert_official", "save_weights",
           "load_weights", "convert_file", "apply_lora", "lora_delta", "FORMAT", "base_fingerprint",
           "base_mismatches", "check_base", "FINGERPRINT_SAMPLES", "open_base", "SD2_UNET", "check_sd2_config",
           "fit_problems", "check_fit", "ConvIn8", "file_sha256", "check_output_name", "converted_path"]

FORMAT = "atelier-dloral"
GROUPS = ("encoder", "decoder", "others")
KINDS = ("quality", "consistency")
ADAPTERS = tuple(f"default_{g}_{k}" for g in GROUPS for k in KINDS)
PEFT_DEFAULT_ALPHA = 8.0

PathArg = Union[str, "os.PathLike[str]"]
"""A file path (str or a path object)."""

_MODULE_LISTS = tuple(f"unet_lora_{g}_modules_{k}" for g in GROUPS for k in KINDS)
_REQUIRED = ("lora_rank_unet_quality", "lora_rank_unet_consistency", *_MODULE_LISTS,
             "state_dict_unet", "state_dict_bpp")
_ATTN = {"query_conv": "q", "key_conv": "k", "value_conv": "v", "proj_out": "out", "threshold_fc": "threshold"}
_UNUSED_BPP = ("feat_extract.", "weight_predict.", "weight_predict_final.", "reconstruction_feat.",
               "conv_hr.", "conv_last.")


def _spynet_keys():
    """Official SpyNet key -> this pack's key (``levels.L.I.weight``)."""
    out = {}
    for lvl in range(6):
        for i in range(5):
            for p in ("weight", "bias"):
                out[f"spynet.basic_module.{lvl}.basic_module.{i}.conv.{p}"] = f"levels.{lvl}.{i}.{p}"
    return out


_SPYNET = _spynet_keys()


@dataclass
class DLoRALWeights:
    """What the pack needs from a DLoRAL checkpoint.

    lora: host-format LoRA dict keyed ``diffusion_model.<ldm module>.{lora_up.weight,lora_down.weight,alpha}``.
    conv_in_weight: [320, 8, 3, 3] merged input convolution (channels 0-3: warped previous latent,
    4-7: fused current latent); conv_in_bias: [320].
    spynet / attn: CFR weights in this pack's naming (see ``cfr.SpyNet`` / ``cfr.RetrievalAttention``).
    meta: string metadata (format, ranks, ``base_fingerprint`` as JSON).
    base: base UNet tensors the checkpoint changed, other than conv_in, keyed ``diffusion_model.<ldm key>``;
    each replaces the user's tensor. A LoRA-targeted weight kept here already includes its LoRA delta
    (and has no LoRA entry).
    conv_in_lora: conv_in unmerged, as the official code runs it: ``base_weight`` [320, 8, 3, 3] and the
    stacked factors ``lora_down.weight`` [r, 8, 3, 3] / ``lora_up.weight`` [320, r, 1, 1] (scaled); empty in
    files converted before it was recorded (the merged ``conv_in_weight`` is then used).
    """
    lora: dict
    conv_in_weight: torch.Tensor
    conv_in_bias: torch.Tensor
    spynet: dict
    attn: dict
    meta: dict = field(default_factory=dict)
    base: dict = field(default_factory=dict)
    conv_in_lora: dict = field(default_factory=dict)

    def modules(self) -> List[str]:
        """LDM module names the LoRA patches (conv_in excluded: it is replaced whole)."""
        return sorted(k[:-len(".lora_up.weight")] for k in self.lora if k.endswith(".lora_up.weight"))

    def adapter_ranks(self) -> "Optional[tuple]":
        """``(r_quality, r_consistency)``: the ranks stacked in each module's factors, quality first (PEFT's
        order of the active adapters); None when the metadata does not record them."""
        try:
            return int(self.meta["rank_quality"]), int(self.meta["rank_consistency"])
        except (KeyError, ValueError):
            return None

    def split(self, rank: int) -> "Optional[tuple]":
        """The adapter ranks of a module whose stacked rank is ``rank`` (None: run it as one product)."""
        r = self.adapter_ranks()
        return r if r is not None and sum(r) == rank else None

    @property
    def fingerprint(self) -> Dict[str, Any]:
        """``{ldm key: {"shape": [...], "sample": [...]}}`` of the checkpoint's base tensors ({} if not recorded)."""
        return json.loads(self.meta.get("base_fingerprint", "{}"))


FINGERPRINT_SAMPLES = 8
CONV_IN_LORA = ("base_weight", "lora_down.weight", "lora_up.weight")


def _sample_index(numel, n=FINGERPRINT_SAMPLES):
    """``n`` fixed flat positions spread over a tensor of ``numel`` elements (all of them when fewer)."""
    if numel <= n:
        return list(range(numel))
    return [(2 * i + 1) * numel // (2 * n) for i in range(n)]


def _sample(t):
    flat = t.detach().reshape(-1)
    idx = _sample_index(flat.numel())
    return flat[torch.tensor(idx, dtype=torch.long, device=flat.device)].float().cpu().tolist()


def base_fingerprint(tensors: Mapping[str, torch.Tensor]) -> dict:
    """Shape and ``FINGERPRINT_SAMPLES`` values at fixed positions of each tensor (empty placeholders,
    as in shape-only test checkpoints, are left out: they have no values to check)."""
    return {k: {"shape": list(v.shape), "sample": _sample(v)} for k, v in sorted(tensors.items()) if v.numel()}


def _tolerance(dtype):
    """(rtol, atol) for comparing a tensor held in ``dtype`` with float32 values of the same weights: twice
    the dtype's unit roundoff (fp16 2^-10, bf16 2^-7, fp8 e4m3 2^-2), at least 2^-10 so that an fp16
    copy of fp32 weights matches; atol covers the dtype's subnormal spacing (at least 1e-7, fp16's)."""
    fi = torch.finfo(dtype) if dtype.is_floating_point else torch.finfo(torch.float32)
    return max(2 * fi.eps, 2.0 ** -10), max(2 * fi.tiny * fi.eps, 1e-7)


def _differs(have, want, dtype):
    """None if ``have`` (values of a tensor in ``dtype``) matches ``want`` (float32 values), else the largest
    relative difference."""
    rtol, atol = _tolerance(dtype)
    h, w = torch.tensor(have, dtype=torch.float64), torch.tensor(want, dtype=torch.float64)
    if h.shape != w.shape:
        return float("inf")
    err = (h - w).abs()
    if bool((err <= rtol * w.abs() + atol).all()):
        return None
    return float((err / w.abs().clamp_min(atol)).max())


def base_mismatches(state_dict: Mapping[str, torch.Tensor], fingerprint: Mapping[str, dict]) -> List[Tuple[str, str]]:
    """The fingerprinted tensors ``state_dict`` (a UNet in LDM naming, keys ``diffusion_model.*``) does not
    match: a list of ``(key, why)``, ``why`` one of "missing", "shape A vs B", "values differ (x rel)".

    Cheap: it reads ``FINGERPRINT_SAMPLES`` values of each tensor, never a whole tensor."""
    out: List[Tuple[str, str]] = []
    for k, fp in sorted(fingerprint.items()):
        t = state_dict.get(k)
        if t is None:
            out.append((k, "missing"))
        elif list(t.shape) != list(fp["shape"]):
            out.append((k, f"shape {list(t.shape)} vs {fp['shape']}"))
        else:
            d = _differs(_sample(t), fp["sample"], t.dtype)
            if d is not None:
                out.append((k, f"values differ (up to {d:.3g} relative)"))
    return out


def check_base(state_dict: Mapping[str, torch.Tensor], weights: "DLoRALWeights") -> None:
    """Raise ValueError naming the tensors when the user's UNet is not the base the DLoRAL checkpoint was
    trained on (see :func:`base_mismatches`); tensors the converted file replaces are not checked."""
    fp = {k: v for k, v in weights.fingerprint.items() if k not in weights.base}
    bad = base_mismatches(state_dict, fp)
    if not bad:
        return
    names = "; ".join(f"{k}: {why}" for k, why in bad[:6]) + ("; ..." if len(bad) > 6 else "")
    raise ValueError(
        f"this UNet is not the base model the DLoRAL weights were made for: {len(bad)} of {len(fp)} base "
        f"tensors differ ({FINGERPRINT_SAMPLES} values sampled from each): {names}. DLoRAL needs "
        "stabilityai/stable-diffusion-2-1-base (e.g. v2-1_512-ema-pruned.safetensors). If this is that model, "
        "the DLoRAL checkpoint changed these tensors: convert it again with the SD2.1-base weights "
        "(python -m dloral convert model.pkl --out ... --base v2-1_512-ema-pruned.safetensors) so that the "
        "converted file keeps them.")


SD2_UNET = {"context_dim": 1024, "model_channels": 320, "use_linear_in_transformer": True}


def check_sd2_config(unet_config: Mapping) -> None:
    """Raise ValueError unless ``unet_config`` (a UNet's config: ``context_dim``, ``model_channels``,
    ``use_linear_in_transformer``, ``adm_in_channels``, as the host's ``unet_config``) is SD2.x: the values
    of :data:`SD2_UNET` and no ``adm_in_channels`` (SD2.1-base, which DLoRAL was trained on)."""
    cfg = unet_config or {}
    bad = {k: cfg.get(k) for k, v in SD2_UNET.items() if cfg.get(k) != v}
    if bad or cfg.get("adm_in_channels") is not None:
        raise ValueError(f"DLoRAL needs an SD2.x (SD2.1-base) UNet; this model has {bad or dict(cfg)} "
                         f"(expected {SD2_UNET} and no adm_in_channels)")


def fit_problems(weights: "DLoRALWeights", key_map: Mapping[str, str],
                 shapes: Mapping[str, Sequence[int]]) -> "tuple[list, list]":
    """What keeps ``weights`` from fitting a UNet: ``(missing, wrong)``.

    key_map: the UNet's LoRA key map, module name as the weights name it (``diffusion_model.<ldm module>``)
    -> the key of its weight in ``shapes`` (the host's ``model_lora_keys_unet``).
    shapes: UNet weight key -> shape (Linear ``[o, i]``, Conv ``[o, i, k, k]``).
    missing: the LoRA modules ``key_map`` lacks. wrong: ``"key: model (..), DLoRAL (..)"`` for each weight whose
    shape is not ``(up.shape[0],) + down.shape[1:]``, and for the input conv when its output channels or kernel
    (``diffusion_model.input_blocks.0.0.weight``, ``[320, 4, 3, 3]`` in SD2) differ from ``conv_in_weight``'s.
    """
    missing, wrong = [], []
    for mod in weights.modules():
        key = key_map.get(mod)
        if key is None:
            missing.append(mod)
            continue
        up, down = weights.lora[mod + ".lora_up.weight"], weights.lora[mod + ".lora_down.weight"]
        want = (up.shape[0],) + tuple(down.shape[1:])
        if tuple(shapes[key]) != want:
            wrong.append(f"{key}: model {tuple(shapes[key])}, DLoRAL {want}")
    conv, key = tuple(weights.conv_in_weight.shape), "diffusion_model.input_blocks.0.0.weight"
    have = shapes.get(key)
    if have is None or have[0] != conv[0] or tuple(have[2:]) != conv[2:]:
        wrong.append(f"{key}: model {None if have is None else tuple(have)}, DLoRAL conv_in {conv}")
    return missing, wrong


def check_fit(weights: "DLoRALWeights", key_map: Mapping[str, str], shapes: Mapping[str, Sequence[int]]) -> None:
    """Raise ValueError, with counts and examples, when ``weights`` do not fit the UNet (see :func:`fit_problems`)."""
    missing, wrong = fit_problems(weights, key_map, shapes)
    if missing or wrong:
        raise ValueError("the DLoRAL weights do not fit this UNet (it is not the SD2.1-base DLoRAL was "
                         f"trained on): {len(missing)} modules missing, e.g. {missing[:3]}; "
                         f"{len(wrong)} shape mismatches, e.g. {wrong[:3]}")


class ConvIn8(torch.nn.Module):
    """DLoRAL's 8-channel input convolution (3x3, padding 1): x ``(B, 8, h, w)`` = [warped previous latent,
    fused latent] -> ``(B, C, h, w)``; the weights ``[C, 8, 3, 3]`` / ``[C]`` follow the input's device and dtype."""
    stride, padding, dilation = (1, 1), (1, 1), (1, 1)
    weight: torch.Tensor       # buffers
    bias: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone())

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, self.weight.to(x), self.bias.to(x), padding=1)


def conv_in_module(w: "DLoRALWeights") -> torch.nn.Module:
    """The module that replaces the UNet's input convolution: the base 8-channel conv with its LoRA
    unmerged (``lora.lora_module``, adapters added one at a time as PEFT does) when the file records it,
    else the merged ``ConvIn8``. Either computes ``conv(x, W + up @ down) + b``."""
    if w.conv_in_lora:
        down, up = w.conv_in_lora["lora_down.weight"], w.conv_in_lora["lora_up.weight"]
        return lora_module(ConvIn8(w.conv_in_lora["base_weight"], w.conv_in_bias), down, up,
                           split=w.split(down.shape[0]))
    return ConvIn8(w.conv_in_weight, w.conv_in_bias)


_SHA256: Dict[Tuple[str, int, int, int], str] = {}     # (path, size, mtime_ns, inode) -> hex digest


def file_sha256(path: PathArg) -> Optional[str]:
    """sha256 (hex) of a file's content, computed once per file version (path, size, mtime, inode); None when
    the file cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _SHA256:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _SHA256[key] = h.hexdigest()
    return _SHA256[key]


def check_output_name(output_name: str) -> "str | None":
    """None when ``output_name`` may name a converted file (a plain file name ending with .safetensors), else
    the message naming the input."""
    name = os.path.basename(output_name.strip())
    if not name.endswith(".safetensors") or name != output_name.strip():
        return (f"output_name: {output_name!r} is not allowed; give a plain file name ending with "
                ".safetensors (it is written to models/dloral)")
    return None


def converted_path(folder: str, output_name: str) -> str:
    """Where a conversion named ``output_name`` goes in ``folder``; ValueError naming the input when the name
    is not allowed (:func:`check_output_name`) or the file exists (converted files are never overwritten)."""
    msg = check_output_name(output_name)
    if msg is not None:
        raise ValueError(msg)
    dst = os.path.join(folder, output_name.strip())
    if os.path.exists(dst):
        raise ValueError(f"output_name: {output_name!r} already exists in {folder}; choose another "
                         "name (converted files are never overwritten)")
    return dst


def load_official(path: PathArg) -> Dict[str, Any]:
    """Open an official ``model.pkl`` with ``torch.load(weights_only=True)``; nothing in it is executed.

    Raises ValueError when the file needs more than tensors and plain containers (unsafe pickle).
    """
    if not os.path.isfile(path):
        raise ValueError(f"DLoRAL checkpoint {path!r}: no such file")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"DLoRAL checkpoint {path!r} was refused: it needs more than tensors and plain containers to "
            f"load (torch.load weights_only=True failed), so it is not the official DLoRAL model.pkl or it was "
            f"tampered with; nothing in it was executed. Detail: {str(exc).splitlines()[0]}") from None


def _check_official(ck):
    if not isinstance(ck, dict):
        raise ValueError(f"not a DLoRAL checkpoint: expected a dict at the top level, got {type(ck).__name__}")
    missing = [k for k in _REQUIRED if k not in ck]
    if missing:
        raise ValueError(f"not a DLoRAL checkpoint: missing top-level keys {missing}")
    for k in ("lora_rank_unet_quality", "lora_rank_unet_consistency"):
        if not isinstance(ck[k], int) or ck[k] <= 0:
            raise ValueError(f"not a DLoRAL checkpoint: {k} must be a positive int, got {ck[k]!r}")


def lora_delta(up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """``up @ down`` for Linear ([o,r] x [r,i]) or Conv ([o,r,1,1] x [r,i,k,k]) LoRA factors."""
    d = up.flatten(1).float() @ down.flatten(1).float()
    return d.reshape(up.shape[0], *down.shape[1:])


def convert_official(ck: Mapping[str, Any], lora_alpha: float = PEFT_DEFAULT_ALPHA, dtype: torch.dtype = torch.float32,
                     base: Optional[Mapping[str, torch.Tensor]] = None) -> "DLoRALWeights":
    """Convert a loaded official checkpoint dict to :class:`DLoRALWeights`.

    Every key of ``state_dict_unet`` and ``state_dict_bpp`` is accounted for (used, a base weight
    the user's SD2.1 supplies, or a known unused CFR part); any other key raises ValueError.
    The base weights are fingerprinted (``meta["base_fingerprint"]``). ``base``: the SD2.1-base UNet in
    LDM naming (``diffusion_model.*``, see :func:`open_base`); every base tensor of the checkpoint that
    differs from it is kept whole in ``DLoRALWeights.base``.
    """
    _check_official(ck)
    sd, bpp = ck["state_dict_unet"], ck["state_dict_bpp"]
    rank = {"quality": ck["lora_rank_unet_quality"], "consistency": ck["lora_rank_unet_consistency"]}
    scale = {k: float(lora_alpha) / r for k, r in rank.items()}
    targets = {}  # module -> group
    for g in GROUPS:
        q, c = ck[f"unet_lora_{g}_modules_quality"], ck[f"unet_lora_{g}_modules_consistency"]
        if sorted(q) != sorted(c):
            raise ValueError(f"not a DLoRAL checkpoint: the {g} quality and consistency module lists differ")
        for m in q:
            if m in targets:
                raise ValueError(f"not a DLoRAL checkpoint: module {m!r} is listed in two groups")
            targets[m] = g
    if "conv_in" not in targets:
        raise ValueError("not a DLoRAL checkpoint: 'conv_in' is not among the LoRA target modules")

    # account for every UNet key
    used: Set[str] = set()
    leftover: List[str] = []
    names: Set[str] = set()
    for key in sd:
        parts = key.split(".")
        if ".lora_A." in key or ".lora_B." in key:
            i = parts.index("lora_A") if "lora_A" in parts else parts.index("lora_B")
            mod, adapter = ".".join(parts[:i]), parts[i + 1]
            if mod not in targets or adapter not in (f"default_{targets[mod]}_{k}" for k in KINDS):
                leftover.append(key)
            continue
        if ".base_layer." in key:
            mod = key[:key.index(".base_layer.")]
            (names.add(mod) if mod in targets else leftover.append(key))
            continue
        names.add(key.rsplit(".", 1)[0])
    layout = layout_from_names(names)
    for n in sorted(names):
        try:
            diffusers_to_ldm(n, layout)
        except KeyError:
            leftover.extend(k for k in sd if k.startswith(n + ".") and ".lora_" not in k)
    if leftover:
        raise ValueError(f"DLoRAL checkpoint: {len(leftover)} UNet keys match no known module or adapter, "
                         f"e.g. {sorted(leftover)[:5]}")

    lora = {}
    need = []
    for mod, g in sorted(targets.items()):
        ks = {(ab, k): f"{mod}.lora_{ab}.default_{g}_{k}.weight" for ab in "AB" for k in KINDS}
        miss = [v for v in ks.values() if v not in sd]
        if miss:
            need.extend(miss)
            continue
        down = torch.cat([sd[ks["A", "quality"]].float(), sd[ks["A", "consistency"]].float()], 0)
        up = torch.cat([sd[ks["B", "quality"]].float() * scale["quality"],
                        sd[ks["B", "consistency"]].float() * scale["consistency"]], 1)
        used.update(ks.values())
        if mod == "conv_in":
            wkey, bkey = "conv_in.base_layer.weight", "conv_in.base_layer.bias"
            if wkey not in sd or bkey not in sd:
                need.extend(k for k in (wkey, bkey) if k not in sd)
                continue
            w = sd[wkey].float()
            if w.dim() != 4 or w.shape[1] != 8:
                raise ValueError(f"not a DLoRAL checkpoint: conv_in weight has shape {tuple(w.shape)}, "
                                 "expected [*, 8, 3, 3]")
            conv_w, conv_b = w + lora_delta(up, down), sd[bkey].float()
            conv_lora = {"base_weight": w, "lora_down.weight": down, "lora_up.weight": up}
            used.update((wkey, bkey))
            continue
        ldm = "diffusion_model." + diffusers_to_ldm(mod, layout)
        lora[ldm + ".lora_up.weight"] = up.to(dtype).contiguous()
        lora[ldm + ".lora_down.weight"] = down.to(dtype).contiguous()
        lora[ldm + ".alpha"] = torch.tensor(float(down.shape[0]))
    if need:
        raise ValueError(f"not a DLoRAL checkpoint: {len(need)} LoRA keys missing, e.g. {need[:5]}")
    base_sd = _base_tensors(sd, targets, layout)
    kept = _changed(base_sd, base) if base is not None else {}
    for key in kept:   # a changed LoRA-targeted weight: kept with its delta merged, no LoRA entry
        mod = key[:-len(".weight")]
        if key.endswith(".weight") and mod + ".lora_up.weight" in lora:
            up, down = lora.pop(mod + ".lora_up.weight"), lora.pop(mod + ".lora_down.weight")
            lora.pop(mod + ".alpha")
            kept[key] = base_sd[key].float() + lora_delta(up, down)

    spy, attn, bad = {}, {}, []
    for key, v in bpp.items():
        if key in _SPYNET:
            spy[_SPYNET[key]] = v.float().to(dtype)
        elif key.startswith("cross_attn_module."):
            sub, _, p = key[len("cross_attn_module."):].rpartition(".")
            if sub in _ATTN:
                attn[f"{_ATTN[sub]}.{p}"] = v.float().to(dtype)
            else:
                bad.append(key)
        elif key in ("spynet.mean", "spynet.std") or key.startswith(_UNUSED_BPP):
            pass  # ImageNet constants (fixed in the pack) and CFR parts inference never runs
        else:
            bad.append(key)
    miss = [k for k in _SPYNET if k not in bpp] + [
        f"cross_attn_module.{s}.{p}" for s in _ATTN for p in ("weight", "bias")
        if f"cross_attn_module.{s}.{p}" not in bpp]
    if miss:
        raise ValueError(f"not a DLoRAL checkpoint: state_dict_bpp lacks {len(miss)} CFR keys, e.g. {miss[:5]}")
    if bad:
        raise ValueError(f"DLoRAL checkpoint: unknown CFR keys {sorted(bad)[:5]}")
    meta = {"format": FORMAT, "version": "1", "rank_quality": str(rank["quality"]),
            "rank_consistency": str(rank["consistency"]), "lora_alpha": str(float(lora_alpha)),
            "modules": str(len(targets)), "base_fingerprint": json.dumps(base_fingerprint(base_sd)),
            "base_kept": json.dumps(sorted(kept))}
    return DLoRALWeights(lora, conv_w.to(dtype), conv_b.to(dtype), spy, attn, meta,
                         {k: v.float().to(dtype).contiguous() for k, v in kept.items()},
                         {k: v.to(dtype).contiguous() for k, v in conv_lora.items()})


def _base_tensors(sd, targets, layout):
    """The checkpoint's non-LoRA UNet tensors other than conv_in, keyed ``diffusion_model.<ldm key>``."""
    out = {}
    for key, v in sd.items():
        if ".lora_A." in key or ".lora_B." in key:
            continue
        if ".base_layer." in key:
            mod, p = key[:key.index(".base_layer.")], key.rsplit(".", 1)[1]
        else:
            mod, p = key.rsplit(".", 1)
        if mod == "conv_in":
            continue
        out["diffusion_model." + diffusers_to_ldm(mod, layout) + "." + p] = v
    return out


def _changed(base_sd, reference):
    """The tensors of ``base_sd`` that differ from ``reference`` beyond the rounding of the reference's dtype
    (ValueError when the reference lacks one or has another shape: it is not an SD2.x UNet of this layout)."""
    kept, bad = {}, []
    for k, v in sorted(base_sd.items()):
        if not v.numel():
            continue
        r = reference.get(k)
        if r is None or tuple(r.shape) != tuple(v.shape):
            bad.append(f"{k}: " + ("missing" if r is None else f"shape {tuple(r.shape)} vs {tuple(v.shape)}"))
            continue
        rtol, atol = _tolerance(r.dtype)
        if not torch.allclose(r.double(), v.double(), rtol=rtol, atol=atol):
            kept[k] = v
    if bad:
        raise ValueError(f"--base: not the SD2.x UNet this DLoRAL checkpoint was trained on: {len(bad)} tensors "
                         f"missing or of another shape, e.g. {bad[:3]}")
    return kept


class _BaseFile(Mapping):
    """The UNet tensors of an SD checkpoint file, keyed ``diffusion_model.*``, read one at a time."""

    PREFIXES = ("model.diffusion_model.", "diffusion_model.", "")

    def __init__(self, path):
        self.path = str(path)
        if self.path.endswith(".safetensors"):
            from safetensors import safe_open
            self._f = safe_open(self.path, framework="pt")
            names = list(self._f.keys())
            self._get = self._f.get_tensor
        else:
            try:
                sd = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:
                raise ValueError(f"--base {self.path!r}: cannot be read as a checkpoint "
                                 f"(torch.load weights_only): {str(exc).splitlines()[0]}") from None
            sd = sd.get("state_dict", sd)
            names, self._get = list(sd), sd.__getitem__
        pre = next((p for p in self.PREFIXES if any(n.startswith(p + "input_blocks.") for n in names)), None)
        if pre is None:
            raise ValueError(f"--base {self.path!r} holds no SD UNet (no '...input_blocks.*' keys)")
        self._keys = {"diffusion_model." + n[len(pre):]: n for n in names
                      if n.startswith(pre) and not n.startswith("first_stage_model.")}

    def __getitem__(self, k):
        return self._get(self._keys[k])

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)


def open_base(path: PathArg) -> Mapping[str, torch.Tensor]:
    """The UNet of an SD2.1 checkpoint file (.safetensors, or a .ckpt read with weights_only) as a lazy
    mapping in the naming :func:`convert_official`'s ``base`` expects."""
    if not os.path.isfile(path):
        raise ValueError(f"--base {path!r}: no such file")
    return _BaseFile(path)


def save_weights(w: "DLoRALWeights", path: PathArg) -> PathArg:
    """Write :class:`DLoRALWeights` as safetensors (to a temporary name, then renamed into place)."""
    from safetensors.torch import save_file
    tensors = dict(w.lora)
    tensors["conv_in.weight"], tensors["conv_in.bias"] = w.conv_in_weight, w.conv_in_bias
    tensors.update({"cfr.spynet." + k: v for k, v in w.spynet.items()})
    tensors.update({"cfr.attn." + k: v for k, v in w.attn.items()})
    tensors.update({"base." + k: v for k, v in w.base.items()})
    tensors.update({"conv_in." + k: v for k, v in w.conv_in_lora.items()})
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".dloral-", suffix=".tmp", dir=d)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=dict(w.meta))
        umask = os.umask(0o022)  # mkstemp makes 0600; give the file the usual permissions
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def load_weights(path: PathArg, dtype: Optional[torch.dtype] = None) -> "DLoRALWeights":
    """Load pack weights from a converted ``.safetensors`` file, or convert an official ``.pkl`` in memory."""
    if not str(path).endswith(".safetensors"):
        w = convert_official(load_official(path))
        return w if dtype is None else _cast(w, dtype)
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path!r} is not a converted DLoRAL file (metadata format is "
                             f"{meta.get('format')!r}, expected {FORMAT!r}); convert model.pkl first")
        t = {k: f.get_tensor(k) for k in f.keys()}
    need = ["conv_in.weight", "conv_in.bias"] + ["cfr.spynet." + v for v in _SPYNET.values()]
    miss = [k for k in need if k not in t]
    if miss:
        raise ValueError(f"converted DLoRAL file {path!r} lacks keys {miss[:5]}")
    w = DLoRALWeights(
        lora={k: v for k, v in t.items() if k.startswith("diffusion_model.")},
        conv_in_weight=t["conv_in.weight"], conv_in_bias=t["conv_in.bias"],
        spynet={k[len("cfr.spynet."):]: v for k, v in t.items() if k.startswith("cfr.spynet.")},
        attn={k[len("cfr.attn."):]: v for k, v in t.items() if k.startswith("cfr.attn.")},
        meta=meta, base={k[len("base."):]: v for k, v in t.items() if k.startswith("base.")},
        conv_in_lora={k: t["conv_in." + k] for k in CONV_IN_LORA if "conv_in." + k in t})
    if w.conv_in_lora and len(w.conv_in_lora) != len(CONV_IN_LORA):
        raise ValueError(f"converted DLoRAL file {path!r} has part of conv_in's LoRA: "
                         f"{sorted(w.conv_in_lora)} of {list(CONV_IN_LORA)}")
    return w if dtype is None else _cast(w, dtype)


def _cast(w, dtype):
    c = lambda d: {k: (v if k.endswith(".alpha") else v.to(dtype)) for k, v in d.items()}
    return DLoRALWeights(c(w.lora), w.conv_in_weight.to(dtype), w.conv_in_bias.to(dtype),
                         c(w.spynet), c(w.attn), dict(w.meta), c(w.base), c(w.conv_in_lora))


#: ``precision`` of the converter (``settings.CONVERT_SETTINGS``) -> storage dtype.
STORAGE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def convert_file(src: PathArg, dst: PathArg, dtype: torch.dtype = torch.float32,
                 base: Optional[PathArg] = None) -> "DLoRALWeights":
    """Convert an official ``model.pkl`` to a converted safetensors file; returns the weights.
    ``dtype``: storage dtype (float32 by default: float16 rounds the LoRA and CFR weights, README 'DLoRAL').
    ``base``: path of the SD2.1-base checkpoint, to keep the base tensors the DLoRAL checkpoint changed."""
    w = convert_official(load_official(src), dtype=dtype, base=open_base(base) if base else None)
    save_weights(w, dst)
    return w


def apply_lora(state_dict: Mapping[str, torch.Tensor], w: "DLoRALWeights",
               strength: float = 1.0) -> Dict[str, torch.Tensor]:
    """Merge the converted weights into an LDM-named UNet state dict (keys ``diffusion_model.*`` or bare).

    Returns a new dict with each targeted weight ``W + strength * up @ down * alpha / rank``, the
    8-channel conv_in and the kept base tensors (``w.base``, which replace the user's).
    Raises ValueError if a LoRA module is missing or its shape does not match.
    """
    prefix = "diffusion_model." if any(k.startswith("diffusion_model.") for k in state_dict) else ""
    out = dict(state_dict)
    for mod in w.modules():
        key = (mod if prefix else mod[len("diffusion_model."):]) + ".weight"
        if key not in out:
            raise ValueError(f"base UNet has no weight {key!r}: it is not an SD2.x UNet this DLoRAL fits")
        up, down = w.lora[mod + ".lora_up.weight"], w.lora[mod + ".lora_down.weight"]
        d = lora_delta(up, down) * lora_scale(w.lora, mod) * strength
        if d.shape != out[key].shape:
            raise ValueError(f"base UNet weight {key!r} has shape {tuple(out[key].shape)}, DLoRAL expects "
                             f"{tuple(d.shape)}: not the SD2.x UNet this DLoRAL fits")
        out[key] = (out[key].float() + d).to(out[key].dtype)
    out[prefix + "input_blocks.0.0.weight"] = w.conv_in_weight
    out[prefix + "input_blocks.0.0.bias"] = w.conv_in_bias
    for k, v in w.base.items():
        out[k if prefix else k[len("diffusion_model."):]] = v
    return out
