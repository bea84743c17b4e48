"""One joint (MM-DiT) attention call with NAG, the NAG-negative text riding in the same sequence.

How the negative text gets its keys: the host hook appends the raw NAG-negative text to the
model's context along the tokens (``[positive, negative]``, :func:`extend_context`), so the
family's own text embedder, per-block projections, q/k norms and RoPE make the negative's keys
and values in the very place the positive's are made. Every joint attention call then sees one
sequence per row holding ``[positive text (+ family extras), negative text, image]`` (text first:
Flux, Chroma, Qwen-Image, SD3.5) or ``[image, positive text, negative text]`` (image first:
HunyuanVideo). :func:`nag_joint_attention` splits it (:class:`JointSpans`) and, per row:

* unguided rows (the CFG negative, rows outside ``guided``): the host's attention over
  ``[positive text, image]`` exactly as without NAG; the negative text's queries get 0;
* guided rows: every query's three partial attentions over the image keys, the positive text's and the
  negative text's (each key set a view of the joint keys: nothing copied; the image keys attended once)
  merged by log-sum-exp in one pass over the sequence (:func:`~nag.joint.sequence_from_parts`, on CUDA one
  fused kernel): the image queries get the NAG rule on Z+ and Z- (what :func:`~nag.joint.joint_nag`
  computes), the positive text's queries their attention over ``[positive text, image]``, the negative
  text's own queries theirs over ``[negative text, image]`` (the negative stream evolves by itself, as in
  the official Flux NAG).

So the positive text and the image never attend the negative's tokens except through Z-, and
the negative's tokens leave the sequence when the model drops the text at its end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from .config import NAGConfig
from .rows import remap_row_slices
from .run import CallPlan
from . import fused
from .joint import AttendLSE, attention_with_lse, fused_attention_with_lse

__all__ = ["JointSpans", "JointPlan", "nag_joint_attention", "extend_context", "extend_mask", "negative_positions",
           "CaptionStreams", "TextSegments", "Attend4"]

Attend4 = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]
"""``attend(q, k, v, mask) -> out``: the host's attention on ``(B, H, L, D)`` tensors, out ``(B, H, Lq, D)``;
``mask`` None or the host's mask restricted to the keys given."""


@dataclass(frozen=True)
class JointSpans:
    """Where the parts of one joint sequence lie.

    Attributes:
        text_first: True for ``[text, image]`` sequences, False for ``[image, text]``.
        text: tokens of the whole text part, negative included (``Lp + Ln`` plus family extras).
        negative: ``Ln``, the negative text's tokens: always the last ``Ln`` of the text part.
    """
    text_first: bool
    text: int
    negative: int

    def split(self, length: int) -> tuple[slice, slice, slice]:
        """Token slices ``(positive text, negative text, image)`` of a sequence of ``length`` tokens (the
        positive text slice includes any family extras)."""
        if not 0 < self.negative < self.text < length:
            raise ValueError(f"joint sequence of {length} tokens cannot hold a text part of {self.text} tokens "
                             f"with {self.negative} negative ones and an image part")
        t0 = 0 if self.text_first else length - self.text
        i0 = self.text if self.text_first else 0
        n0 = t0 + self.text - self.negative
        return slice(t0, n0), slice(n0, t0 + self.text), slice(i0, i0 + length - self.text)


class JointPlan:
    """NAG in one model call of a joint-attention family (what the attention override reads).

    Attributes:
        call: the core's :class:`~nag.run.CallPlan` (config, guided rows, batch; ``negative`` is the raw
            negative text, already appended to the context).
        spans: :class:`JointSpans` of the joint calls.
        positive: ``Lp``, the call's own text tokens (the context before the negative was appended).
        image: image tokens of a joint call; None until :meth:`match` meets the first call longer than
            the text part (the first attention of every joint family's forward is a joint one), then
            only calls of exactly ``text + image`` tokens are joint (an image-only self-attention, e.g.
            SD3.5's second attention in its first blocks, is left alone).
        joint_calls: joint calls guided so far.
        captions: NextDiT families (Lumina2, Z-Image): the two caption streams (:class:`CaptionStreams`; the
            host hook then sets :attr:`image` itself, since an image-only refiner runs before the joint layers);
            ``caption_pad`` ``(1, D)`` the family's caption pad token and ``negative_mask`` ``(1 or B, Ln)`` the
            NAG negative's own text mask, each None where there is none. None for the other families.
        segments: HiDream: the text part as ``[+, -]`` segments (:class:`TextSegments`; the override passes
            :meth:`segment_order` to each joint call as :func:`nag_joint_attention`'s ``order``); None for the other families.
    """

    def __init__(self, call: CallPlan, spans: JointSpans, positive: int) -> None:
        self.call = call
        self.spans = spans
        self.positive = positive
        self.image: Optional[int] = None
        self.joint_calls = 0
        self.captions: Optional[CaptionStreams] = None
        self.caption_pad: Optional[torch.Tensor] = None
        self.negative_mask: Optional[torch.Tensor] = None
        self.segments: Optional[TextSegments] = None
        self._orders: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def segment_order(self, length: int, device: torch.device) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """``(order, inverse)`` for a joint sequence of ``length`` tokens when the text part is in
        :attr:`segments` (:meth:`TextSegments.order` and its inverse permutation, made once per call and
        device); None otherwise."""
        if self.segments is None:
            return None
        key = (length, str(device))
        if key not in self._orders:
            order = self.segments.order(length - self.segments.text, device)
            self._orders[key] = (order, torch.argsort(order))
        return self._orders[key]

    def match(self, q_len: int, k_len: int) -> bool:
        """Whether an attention of ``q_len`` queries over ``k_len`` keys is one of this call's joint
        attentions (self-attention over text + image)."""
        if q_len != k_len or q_len <= self.spans.text:
            return False
        if self.image is None:
            self.image = q_len - self.spans.text
        return q_len == self.spans.text + self.image


@dataclass(frozen=True)
class TextSegments:
    """A text part (after the image) made of several segments, each ``[positive part, negative part]``.

    HiDream's joint sequence is ``[image, T5+, T5-, Llama_last+, Llama_last-, Llama_i+, Llama_i-]``: the host
    concatenates the T5 text, the last Llama layer's states and the block's own Llama layer's states, each of
    which carries the NAG negative appended to the positive. :meth:`order` takes such a sequence to the
    image-first layout :class:`JointSpans` reads, ``[image, every positive part, every negative part]``, the
    positive parts in the host's own order.

    Attributes:
        parts: ``((p1, n1), (p2, n2), ...)`` tokens of each segment's positive and negative part.
    """
    parts: tuple[tuple[int, int], ...]

    @property
    def text(self) -> int:
        """Tokens of the whole text part."""
        return sum(p + n for p, n in self.parts)

    @property
    def negative(self) -> int:
        """Tokens of the negative parts together."""
        return sum(n for _, n in self.parts)

    def spans(self) -> JointSpans:
        """The :class:`JointSpans` (image first) of a sequence put in :meth:`order`."""
        return JointSpans(False, self.text, self.negative)

    def order(self, image: int, device: Optional[torch.device] = None) -> torch.Tensor:
        """``(image + text,)`` int64 indices: ``seq.index_select(dim, order)`` is ``[image, p1, p2, ..., n1, n2,
        ...]`` for ``seq = [image, p1, n1, p2, n2, ...]`` (``image`` image tokens first)."""
        positive, negative = [], []
        at = image
        for p, n in self.parts:
            positive.append(torch.arange(at, at + p))
            negative.append(torch.arange(at + p, at + p + n))
            at += p + n
        return torch.cat([torch.arange(image), *positive, *negative]).to(device)


def extend_context(context: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """``[context, negative]`` along the tokens.

    Args:
        context: ``(B, Lp, C)`` the call's text context (raw encoder output).
        negative: ``(1 or B, Ln, C)`` the raw NAG-negative text.
    Returns:
        ``(B, Lp + Ln, C)`` in ``context``'s dtype and device.
    """
    if negative.shape[-1] != context.shape[-1]:
        raise ValueError(f"negative is {negative.shape[-1]} wide, context {context.shape[-1]}")
    neg = negative.to(device=context.device, dtype=context.dtype)
    if neg.shape[0] != context.shape[0]:
        neg = neg[:1].expand(context.shape[0], *neg.shape[1:])
    return torch.cat([context, neg], dim=1)


def extend_mask(mask: torch.Tensor, negative_tokens: int, negative: Optional[torch.Tensor] = None) -> torch.Tensor:
    """A text mask ``(B, Lp)`` extended to ``(B, Lp + Ln)`` for the appended negative.

    ``negative``: the NAG negative's own keep-mask ``(1 or B, Ln)`` (1/True = a real token), used when ``mask``
    is a keep-mask too (bool, integers, or floats that are all 0/1); otherwise every negative token gets
    "attend": True (bool), 1 (keep-masks) or 0 (additive float masks)."""
    if mask.dtype == torch.bool:
        fill: float | bool = True
    elif not torch.is_floating_point(mask) or bool(((mask == 0) | (mask == 1)).all()):
        fill = 1
    else:
        fill = 0
    shape = (*mask.shape[:-1], negative_tokens)
    if negative is not None and fill != 0 and negative.shape[-1] == negative_tokens:
        pad = negative.to(device=mask.device, dtype=mask.dtype).expand(shape)
    else:
        pad = torch.full(shape, fill, dtype=mask.dtype, device=mask.device)
    return torch.cat([mask, pad], dim=-1)


def negative_positions(ids: torch.Tensor, positive: int, negative: int) -> torch.Tensor:
    """RoPE positions of a text-first sequence with the negative text given the positions it would have alone.

    Families that number their text tokens (Flux2's text axis, Qwen-Image's ``txt_start + j``) would give the
    appended negative's token ``j`` the position of token ``Lp + j``. This moves the negative's block back by
    the step between the first negative and the first positive token, so token ``j`` of either text has the
    same position (all-zero text positions, as in Flux, stay as they are).

    Args:
        ids: ``(B, L, A)`` position ids of ``[positive text, negative text, image...]`` (``A`` axes).
        positive, negative: ``Lp``, ``Ln``.
    Returns:
        a new ``(B, L, A)`` tensor; ``ids`` is not modified.
    """
    if ids.ndim != 3 or ids.shape[1] < positive + negative or positive < 1:
        raise ValueError(f"ids of shape {tuple(ids.shape)} do not hold {positive} + {negative} text tokens first")
    out = ids.clone()
    step = ids[:, positive:positive + 1] - ids[:, :1]
    out[:, positive:positive + negative] -= step
    return out


@dataclass(frozen=True)
class CaptionStreams:
    """The positive and the NAG-negative caption as two streams of one NextDiT-style sequence (Lumina2, Z-Image).

    Such a family refines the caption alone before the joint layers, numbers the caption tokens ``1..Lc`` on the
    first RoPE axis, puts every image token at first-axis position ``Lc + 1`` (after the caption) and, in
    Z-Image, pads the caption with a learned pad token to a multiple of ``multiple``. An appended negative would
    attend the positive in the refiner, move the image tokens' positions and change the pad count. Here each
    caption is padded by itself (:meth:`pad`) and the negative's positions are moved back so that it ends right
    before the image tokens, which keep their positions (:meth:`positions`): the negative's tokens then stand to
    each other and to the image exactly as in a run of the negative alone (RoPE sees only differences), for a
    negative shorter or longer than the positive, and the positive stream is what it is without NAG.

    Attributes:
        raw_positive, raw_negative: caption tokens as the encoder gave them (``Lp``, ``Ln``).
        multiple: the family's caption pad multiple (Z-Image: 32), None for no padding (Lumina2).
    """
    raw_positive: int
    raw_negative: int
    multiple: Optional[int] = None

    def padded(self, n: int) -> int:
        """``n`` tokens padded up to a multiple of :attr:`multiple` (``n`` itself without one)."""
        return n + (-n) % self.multiple if self.multiple else n

    @property
    def positive(self) -> int:
        """``Lp'``: the positive caption's tokens after its padding."""
        return self.padded(self.raw_positive)

    @property
    def negative(self) -> int:
        """``Ln'``: the negative caption's tokens after its own padding."""
        return self.padded(self.raw_negative)

    def pad(self, captions: torch.Tensor, pad_token: Optional[torch.Tensor]) -> torch.Tensor:
        """Each caption padded by itself with ``pad_token``.

        Args:
            captions: ``(B, Lp + Ln, D)`` the embedded ``[positive, negative]`` captions.
            pad_token: ``(1, D)`` the family's learned caption pad token; None when :attr:`multiple` is None.
        Returns:
            ``(B, Lp' + Ln', D)`` ``[positive, its pads, negative, its pads]``; ``captions`` itself without padding.
        """
        lp, ln = self.raw_positive, self.raw_negative
        if captions.shape[1] != lp + ln:
            raise ValueError(f"captions of {captions.shape[1]} tokens are not {lp} + {ln}")
        if not self.multiple or (self.positive == lp and self.negative == ln):
            return captions
        if pad_token is None:
            raise ValueError("a caption pad multiple needs the family's pad token")
        tok = pad_token.to(device=captions.device, dtype=captions.dtype).reshape(1, 1, -1)
        b, d = captions.shape[0], captions.shape[-1]
        return torch.cat([captions[:, :lp], tok.expand(b, self.positive - lp, d),
                          captions[:, lp:], tok.expand(b, self.negative - ln, d)], dim=1)

    def positions(self, ids: torch.Tensor) -> torch.Tensor:
        """RoPE ids of ``[positive caption, negative caption, image...]`` with the negative ending right before the
        image and the image where it is without the negative.

        The host numbers the ``Lp' + Ln'`` caption tokens as one caption; every token after the positive whose
        first-axis position lies beyond the positive's last one (the negative's tokens, the image tokens) is moved
        back by ``Ln'``. Tokens at or before it (Z-Image's image pad tokens at 0) keep theirs; other axes are kept.

        Args:
            ids: ``(B, L, A)`` position ids, the ``Lp' + Ln'`` captions first.
        Returns:
            a new ``(B, L, A)`` tensor; ``ids`` is not modified.
        """
        p, n = self.positive, self.negative
        if ids.ndim != 3 or ids.shape[1] < p + n:
            raise ValueError(f"ids of shape {tuple(ids.shape)} do not hold {p} + {n} caption tokens first")
        out = ids.clone()
        last = ids[:, :p, 0].amax(dim=1, keepdim=True)
        rest = out[:, p:, 0]
        out[:, p:, 0] = torch.where(rest > last, rest - n, rest)
        return out


def _part(mask: Optional[torch.Tensor], length: int, queries: slice,
          keys: slice | torch.Tensor) -> Optional[torch.Tensor]:
    """The host's mask (broadcastable to ``(B, H, L, L)``) for ``queries`` over ``keys`` (a slice or indices)."""
    if mask is None:
        return None
    if mask.shape[-1] != length:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not cover the {length} keys")
    m = mask[..., keys]
    if m.ndim >= 2 and m.shape[-2] == length:
        m = m[..., queries, :]
    return m


def _rows(mask: Optional[torch.Tensor], rows: slice) -> Optional[torch.Tensor]:
    if mask is None or mask.ndim < 4 or mask.shape[0] == 1:
        return mask
    return mask[rows]


def nag_joint_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spans: JointSpans,
                        guided: Sequence[slice], config: NAGConfig, attend: Attend4, *,
                        mask: Optional[torch.Tensor] = None,
                        attention_lse: Optional[AttendLSE] = None,
                        order: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """A joint attention with the NAG negative text in its sequence, guided on ``guided`` rows.

    Args:
        q, k, v: ``(B, H, L, D)`` the host's joint q/k/v (RoPE and norms applied), the text part
            holding the negative text as its last ``spans.negative`` tokens.
        spans: :class:`JointSpans` of this sequence.
        guided: row slices to guide; the other rows get the host's attention over
            ``[positive text, image]`` exactly as without the negative text.
        config: :class:`~nag.config.NAGConfig`.
        attend: the host's attention (:data:`Attend4`), used for the unguided rows.
        mask: None, or the host's mask over the ``L`` keys (broadcastable to ``(B, H, L, L)``);
            each part sees it restricted to its keys. A masked guided call uses the
            reference :func:`~nag.joint.attention_with_lse` for its partial attentions.
        attention_lse: :data:`~nag.joint.AttendLSE` for the guided partial attentions; None =
            :func:`~nag.joint.fused_attention_with_lse`.
        order: None, or ``(order, inverse)`` ``(L,)`` int64 on ``q``'s device when the host's sequence is not in
            the layout ``spans`` describes: the layout's token ``j`` is the host's token ``order[j]`` (HiDream:
            :meth:`JointPlan.segment_order`), the image tokens in their own places (``order[img] == img``). ``q``,
            ``k``, ``v``, ``mask`` and the output stay in the host's order: guided rows gather only the two texts'
            keys and values (text tokens), the image keys stay a view; unguided rows gather their ``[positive
            text, image]`` as they copy it anyway.

    Returns:
        ``(B, H, L, D)`` in ``q.dtype``, a view of a token-major ``(B, L, H, D)`` tensor (so the host's
        ``transpose(1, 2).reshape(B, L, H*D)`` copies nothing). Guided rows: every query of the sequence attends
        the image keys, the positive text's keys and the negative text's keys in three partial attentions
        (each key set a view of ``k``/``v``: no key or value is copied, the image keys are attended once for
        all queries); :func:`~nag.joint.sequence_from_parts` (on CUDA its fused kernel, :func:`nag.fused.guided`)
        merges them by log-sum-exp and gives the image queries ``nag_combine(Z+, Z-)`` (norm over all heads),
        the positive text's queries their attention over ``[positive text, image]``, the negative text's
        queries theirs over ``[negative text, image]`` (the negative stream evolves by itself, as in the official
        Flux NAG); at cfg 1 (every row guided) the kernel's output is the call's output (no write-back). The
        parts' cross rows (the negative text's queries over the positive's keys and the reverse, ``2 Lp Ln``
        logits) are computed and not read. Other rows: the host's attention over ``[positive text, image]``, 0
        at the negative's positions.
    """
    b, h, length, d = q.shape
    pos, neg, img = spans.split(length)
    rows = (pos, neg, img)
    lse = attention_lse if mask is None else None
    if mask is None and lse is None:
        lse = fused_attention_with_lse
    if lse is None:
        def lse(q_, k_, v_, m_):
            return attention_with_lse(q_, k_, v_, m_, out_dtype=torch.float32)
    every = slice(0, length)

    def host(sl: slice) -> slice | torch.Tensor:
        """The host's positions of the layout's tokens ``sl``: ``sl`` itself (a view) without ``order`` and for
        the image, else an index tensor."""
        return sl if order is None or sl is img else order[0][sl]

    def take(t: torch.Tensor, at: slice | torch.Tensor) -> torch.Tensor:
        return t[:, :, at] if isinstance(at, slice) else t.index_select(2, at)

    def guided_rows(sl: slice) -> torch.Tensor:
        """``(rows, L, H, D)`` of the guided rows ``sl``."""
        m = _rows(mask, sl)
        qr, kr, vr = q[sl], k[sl], v[sl]
        p_img, p_pos, p_neg = (lse(qr, take(kr, keys), take(vr, keys), _part(m, length, every, keys))
                               for keys in (host(img), host(pos), host(neg)))
        return fused.guided(p_img, p_pos, p_neg, config.scale, config.tau, config.alpha, out_dtype=q.dtype,
                            chunk_tokens=config.chunk_tokens, rows=rows, order=order)

    is_guided = torch.zeros(b, dtype=torch.bool)
    for sl in guided:
        is_guided[sl] = True
    if bool(is_guided.all()) and len(guided) == 1:        # cfg 1: the kernel's output is the call's
        return guided_rows(guided[0]).transpose(1, 2)
    out = torch.empty(b, length, h, v.shape[-1], dtype=q.dtype, device=q.device).transpose(1, 2)
    # the unguided rows, as runs of rows (usually one: the uncond chunk at cfg > 1): views, no gather; one copy
    # of [positive text, image] of q, k and v per run for the host's attention
    first, second = (pos, img) if spans.text_first else (img, pos)
    n_first = first.stop - first.start
    for run in remap_row_slices([slice(r, r + 1) for r in range(b) if not is_guided[r]], range(b)):
        if order is None:
            qs, ks, vs = (torch.cat([t[run][:, :, first], t[run][:, :, second]], dim=2) for t in (q, k, v))
            keep = torch.cat([torch.arange(length)[first], torch.arange(length)[second]])
        else:
            keep = torch.cat([order[0][first], order[0][second]])
            qs, ks, vs = (t[run].index_select(2, keep) for t in (q, k, v))
        m = _rows(mask, run)
        if m is not None:
            keep = keep.to(m.device)
            m = m.index_select(-1, keep)
            if m.ndim >= 2 and m.shape[-2] == length:
                m = m.index_select(-2, keep)
        z = attend(qs, ks, vs, m)
        if order is None:
            out[run, :, first] = z[:, :, :n_first]
            out[run, :, second] = z[:, :, n_first:]
            out[run, :, neg] = 0
        else:
            o = out[run]                                   # a view: the writes below land in ``out``
            o[:, :, keep.to(o.device)] = z
            o[:, :, order[0][neg]] = 0
    for sl in guided:
        out[sl] = guided_rows(sl).transpose(1, 2)
    return out
