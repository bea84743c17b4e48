"""NAG (Normalized Attention Guidance), pure torch.

Negative prompts at CFG 1 in one forward pass: inside each cross-attention (Wan, SD) or the
text part of each joint attention (MM-DiT), the image/video queries attend to the positive
prompt (Z+) and to the NAG-negative prompt (Z-); the combine rule extrapolates away from Z-,
clips the L1 norm ratio per token and blends. Nothing here imports ComfyUI.

* :mod:`.combine`: :func:`nag_combine`, the rule itself (public, documented in the README).
* :mod:`.config`: :class:`NAGConfig` (scale, tau, alpha, sigma_end) and the sigma gate.
* :mod:`.rows`: :func:`guided_row_slices`, the positive chunks of a batched call.
* :mod:`.run`: :class:`NAGRun` (per-run projected-negative cache) and :class:`CallPlan` (one call).
* :mod:`.inputs`: checks of the node's model and NAG-negative inputs.
* :mod:`.cross_attention`: :func:`nag_cross_attention`, one Wan cross-attention call with NAG;
  :func:`guide_rows`, the same on any cross-attention's queries and output.
* :mod:`.joint`: NAG on joint (MM-DiT) attention: :func:`joint_nag` / :func:`joint_pair` attend the
  image keys once and the two texts each once, merged by log-sum-exp (:func:`merge_attention`,
  :func:`attention_with_lse`, :func:`fused_attention_with_lse`).
* :mod:`.fused`: the merges and the combine rule as one ``torch.compile``d kernel on CUDA
  (:func:`~nag.fused.guided`, :func:`~nag.fused.combine`; the eager functions elsewhere).
* :mod:`.joint_call`: :func:`nag_joint_attention`, one joint attention call of a model whose text part
  carries the NAG negative (:class:`JointSpans`, :class:`JointPlan`, :func:`extend_context`,
  :func:`negative_positions`).
"""
from .combine import nag_combine, check_nag_params
from .config import NAGConfig, SETTINGS, config_from_inputs
from .rows import guided_row_slices, remap_row_slices, COND
from .cross_attention import nag_cross_attention, negative_kv, guide_rows
from .run import NAGRun, CallPlan
from .inputs import check_wan_model, check_negative_context
from .joint import (attention_with_lse, fused_attention_with_lse, merge_attention, merge_heads, joint_pair,
                    joint_nag)
from .joint_call import (JointSpans, JointPlan, nag_joint_attention, extend_context, extend_mask, negative_positions,
                         CaptionStreams, TextSegments)

__all__ = ["nag_combine", "check_nag_params", "NAGConfig", "guided_row_slices", "remap_row_slices", "COND",
           "nag_cross_attention", "negative_kv", "SETTINGS", "config_from_inputs", "NAGRun", "CallPlan",
           "check_wan_model", "check_negative_context", "attention_with_lse", "fused_attention_with_lse",
           "merge_attention", "merge_heads", "joint_pair", "joint_nag", "guide_rows", "JointSpans", "JointPlan",
           "nag_joint_attention", "extend_context", "extend_mask", "negative_positions",
           "CaptionStreams", "TextSegments"]
