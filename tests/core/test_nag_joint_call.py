"""nag.joint_call: one joint attention with the NAG negative text in its sequence, against an independent
reference (explicit concatenation of the key sets, softmax attention in float64)."""
import math

import pytest
import torch

from nag import NAGConfig, nag_combine
from nag.joint_call import (JointPlan, JointSpans, extend_context, extend_mask, nag_joint_attention,
                            negative_positions, CaptionStreams, TextSegments)
from nag.run import CallPlan


def ref_attend(q, k, v, mask=None):
    s = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s + mask.double()
    return (torch.softmax(s, -1) @ v.double()).to(q.dtype)


def heads_merged(z):
    b, h, n, d = z.shape
    return z.transpose(1, 2).reshape(b, n, h * d)


def idx(*slices):
    return torch.cat([torch.arange(s.start, s.stop) for s in slices])


def make(b=3, h=2, lp=5, ln=4, li=7, d=8, text_first=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, lp + ln + li, d, generator=g, dtype=torch.float64) for _ in range(3))
    return q, k, v, JointSpans(text_first, lp + ln, ln)


@pytest.mark.parametrize("text_first", [True, False])
@pytest.mark.parametrize("guided", [[slice(1, 3)], [slice(0, 1)], [slice(1, 2)], [slice(0, 3)], []])   # [1, 2): unguided rows 0 and 2, not one run
def test_matches_explicit_concatenation(text_first, guided):
    q, k, v, spans = make(text_first=text_first)
    cfg = NAGConfig(scale=5.0, tau=2.0, alpha=0.5)
    out = nag_joint_attention(q, k, v, spans, guided, cfg, lambda a, b_, c, m: ref_attend(a, b_, c, m))
    pos, neg, img = (idx(s) for s in spans.split(q.shape[2]))
    keep = torch.cat([pos, img]) if text_first else torch.cat([img, pos])
    rows = {r for sl in guided for r in range(sl.start, sl.stop)}
    for r in range(q.shape[0]):
        qs, ks, vs = q[r:r + 1], k[r:r + 1], v[r:r + 1]
        z_pos = ref_attend(qs[:, :, keep], ks[:, :, keep], vs[:, :, keep])
        if r not in rows:
            torch.testing.assert_close(out[r:r + 1, :, keep], z_pos, rtol=0, atol=1e-12)
            assert torch.equal(out[r, :, neg], torch.zeros_like(out[r, :, neg]))
            continue
        nk = torch.cat([neg, img])
        z_neg = ref_attend(qs[:, :, img], ks[:, :, nk], vs[:, :, nk])
        zi = z_pos[:, :, (slice(len(pos), None) if text_first else slice(0, len(img)))]
        want = nag_combine(heads_merged(zi), heads_merged(z_neg), cfg.scale, cfg.tau, cfg.alpha)
        got_img = heads_merged(out[r:r + 1, :, img])
        torch.testing.assert_close(got_img, want, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(out[r:r + 1, :, pos], ref_attend(qs[:, :, pos], ks[:, :, keep], vs[:, :, keep]),
                                   rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(out[r:r + 1, :, neg], ref_attend(qs[:, :, neg], ks[:, :, nk], vs[:, :, nk]),
                                   rtol=1e-6, atol=1e-8)


def test_negative_equal_to_positive_gives_the_plain_output():
    q, k, v, spans = make(lp=4, ln=4)
    for t in (k, v):                 # negative keys/values = positive ones
        t[:, :, 4:8] = t[:, :, 0:4]
    out = nag_joint_attention(q, k, v, spans, [slice(0, 3)], NAGConfig(), lambda a, b_, c, m: ref_attend(a, b_, c))
    pos, neg, img = (idx(s) for s in spans.split(q.shape[2]))
    keep = torch.cat([pos, img])
    torch.testing.assert_close(out[:, :, keep], ref_attend(q[:, :, keep], k[:, :, keep], v[:, :, keep]),
                               rtol=1e-9, atol=1e-12)


def test_mask_restricted_per_part():
    q, k, v, spans = make(b=2, lp=5, ln=3, li=6)
    length = q.shape[2]
    mask = torch.zeros(1, 1, 1, length, dtype=torch.float64)
    mask[..., 3:5] = -math.inf       # the last two positive text tokens are padding
    out = nag_joint_attention(q, k, v, spans, [slice(1, 2)], NAGConfig(scale=3.0, alpha=0.5),
                              lambda a, b_, c, m: ref_attend(a, b_, c, m), mask=mask)
    pos, neg, img = (idx(s) for s in spans.split(length))
    keep = torch.cat([pos, img])
    torch.testing.assert_close(out[:1, :, keep], ref_attend(q[:1, :, keep], k[:1, :, keep], v[:1, :, keep],
                                                            mask[..., keep]), rtol=0, atol=1e-12)
    assert torch.isfinite(out).all()
    # the padded keys must not count: same guided output as with them cut out
    cut = torch.cat([pos[:3], neg, img])
    out_cut = nag_joint_attention(q[:, :, cut], k[:, :, cut], v[:, :, cut], JointSpans(True, 6, 3), [slice(1, 2)],
                                  NAGConfig(scale=3.0, alpha=0.5), lambda a, b_, c, m: ref_attend(a, b_, c, m))
    torch.testing.assert_close(out[1:, :, img], out_cut[1:, :, 6:], rtol=1e-6, atol=1e-8)


def test_spans():
    assert JointSpans(True, 8, 3).split(20) == (slice(0, 5), slice(5, 8), slice(8, 20))
    assert JointSpans(False, 8, 3).split(20) == (slice(12, 17), slice(17, 20), slice(0, 12))


@pytest.mark.parametrize("text_first", [True, False])
def test_fused_lse_path_matches_reference(text_first):
    """The default partial attention (torch's fused kernels) against the float64 reference, float32 inputs."""
    q, k, v, spans = (t.float() if isinstance(t, torch.Tensor) else t for t in make(text_first=text_first))
    cfg = NAGConfig(scale=5.0, tau=2.0, alpha=0.5)
    fused = nag_joint_attention(q, k, v, spans, [slice(0, 3)], cfg, lambda a, b_, c, m: ref_attend(a, b_, c, m))
    ref = nag_joint_attention(q.double(), k.double(), v.double(), spans, [slice(0, 3)], cfg,
                              lambda a, b_, c, m: ref_attend(a, b_, c, m))
    torch.testing.assert_close(fused, ref.float(), rtol=1e-4, atol=1e-5)


def test_spans_refuse_a_sequence_without_image():
    with pytest.raises(ValueError, match="cannot hold"):
        JointSpans(True, 8, 3).split(8)


def test_plan_matches_joint_calls_only():
    plan = JointPlan(CallPlan(NAGConfig(), torch.zeros(1, 3, 4), [slice(0, 1)], 1), JointSpans(True, 8, 3), 5)
    assert not plan.match(8, 8)       # text-only
    assert not plan.match(20, 8)      # not self-attention
    assert plan.match(20, 20) and plan.image == 12
    assert not plan.match(12, 12)     # image-only self-attention (SD3.5's second attention)
    assert plan.match(20, 20)


def test_extend_context_and_mask():
    ctx, neg = torch.randn(2, 5, 4), torch.randn(1, 3, 4, dtype=torch.float64)
    out = extend_context(ctx, neg)
    assert out.shape == (2, 8, 4) and out.dtype == ctx.dtype
    assert torch.equal(out[1, 5:], neg[0].float())
    with pytest.raises(ValueError, match="wide"):
        extend_context(ctx, torch.randn(1, 3, 5))
    assert extend_mask(torch.tensor([[True, False]]), 2).tolist() == [[True, False, True, True]]
    assert extend_mask(torch.tensor([[1, 0]]), 1).tolist() == [[1, 0, 1]]
    assert extend_mask(torch.tensor([[0.0, -1e9]]), 1).tolist() == [[0.0, -1e9, 0.0]]
    # the negative's own padding mask, where the host mask is a keep-mask
    assert extend_mask(torch.tensor([[1, 1], [1, 0]]), 3, torch.tensor([[1, 1, 0]])).tolist() == \
        [[1, 1, 1, 1, 0], [1, 0, 1, 1, 0]]
    assert extend_mask(torch.tensor([[0.0, -1e9]]), 2, torch.tensor([[1, 0]])).tolist() == [[0.0, -1e9, 0.0, 0.0]]


def test_negative_positions():
    ids = torch.zeros(1, 10, 4)
    ids[0, :8, 3] = torch.arange(8.0)                 # Flux2: text numbered on axis 3; 5 positive + 3 negative
    out = negative_positions(ids, 5, 3)
    assert out[0, 5:8, 3].tolist() == [0.0, 1.0, 2.0] and torch.equal(out[0, :5], ids[0, :5])
    assert torch.equal(ids[0, 5:8, 3], torch.tensor([5.0, 6.0, 7.0]))     # input untouched
    q = torch.arange(4.0, 12.0).reshape(1, 8, 1).repeat(1, 1, 3)          # Qwen: txt_start + j on every axis
    assert negative_positions(q, 5, 3)[0, 5:, 0].tolist() == [4.0, 5.0, 6.0]
    flux = torch.zeros(1, 9, 3)
    assert torch.equal(negative_positions(flux, 4, 3), flux)


def _nextdit_ids(caption: int, image: int, image_pad: int = 0) -> torch.Tensor:
    """What NextDiT (ComfyUI v0.8.0) builds: caption 1..Lc on axis 0, image at Lc + 1 with its row/column on
    axes 1/2, image pad tokens at 0."""
    ids = torch.zeros(1, caption + image + image_pad, 3)
    ids[0, :caption, 0] = torch.arange(caption) + 1.0
    ids[0, caption:caption + image, 0] = caption + 1.0
    ids[0, caption:caption + image, 1] = torch.arange(image) // 2
    ids[0, caption:caption + image, 2] = torch.arange(image) % 2
    return ids


@pytest.mark.parametrize("lp,ln,multiple", [(5, 3, None), (5, 9, None), (20, 7, 32), (20, 40, 32), (32, 32, 32)])
def test_caption_streams_positions_are_those_of_each_caption_alone(lp, ln, multiple):
    s = CaptionStreams(lp, ln, multiple)
    p, n = s.positive, s.negative
    assert (p, n) == ((-(-lp // multiple) * multiple, -(-ln // multiple) * multiple) if multiple else (lp, ln))
    joint = _nextdit_ids(p + n, 6, image_pad=2)
    out = s.positions(joint)
    alone_pos, alone_neg = _nextdit_ids(p, 6, 2), _nextdit_ids(n, 6, 2)
    assert torch.equal(out[:, :p], alone_pos[:, :p])                       # the positive as without NAG
    assert torch.equal(out[:, p + n:], alone_pos[:, p:])                   # the image (and its pads) unmoved
    # the negative to itself and to the image: the differences of a run of the negative alone
    rel = out[0, p + n:p + n + 6, None, 0] - out[0, None, p:p + n, 0]
    rel_alone = alone_neg[0, n:n + 6, None, 0] - alone_neg[0, None, :n, 0]
    assert torch.equal(rel, rel_alone)
    assert torch.equal(joint, _nextdit_ids(p + n, 6, 2))                   # input untouched


def test_caption_streams_pad_each_caption_by_itself():
    s = CaptionStreams(3, 5, 4)
    caps = torch.arange(8.0).reshape(1, 8, 1).expand(2, 8, 2)
    out = s.pad(caps, torch.full((1, 2), -1.0))
    assert out.shape == (2, 12, 2)
    assert out[0, :, 0].tolist() == [0, 1, 2, -1, 3, 4, 5, 6, 7, -1, -1, -1]
    assert CaptionStreams(3, 5).pad(caps, None) is caps
    with pytest.raises(ValueError, match="not 3 \\+ 4"):
        CaptionStreams(3, 4, 4).pad(caps, torch.zeros(1, 2))


def test_text_segments_order():
    """HiDream's [image, T5+, T5-, L+, L-, Li+, Li-] taken to [image, T5+, L+, Li+, T5-, L-, Li-] (known indices)."""
    seg = TextSegments(((2, 1), (1, 2), (1, 2)))
    assert (seg.text, seg.negative) == (9, 5)
    assert seg.spans() == JointSpans(False, 9, 5)
    order = seg.order(3)
    assert order.tolist() == [0, 1, 2, 3, 4, 6, 9, 5, 7, 8, 10, 11]
    assert sorted(order.tolist()) == list(range(12))
    pos, neg, img = seg.spans().split(12)
    assert order[pos].tolist() == [3, 4, 6, 9] and order[neg].tolist() == [5, 7, 8, 10, 11]
    assert order[img].tolist() == [0, 1, 2]
    plan = JointPlan(CallPlan(NAGConfig(scale=5.0, tau=2.0, alpha=0.5), torch.zeros(1, 5, 4), [slice(0, 1)], 1),
                     seg.spans(), 4)
    assert plan.segment_order(12, torch.device("cpu")) is None
    plan.segments = seg
    o, inv = plan.segment_order(12, torch.device("cpu"))
    assert o.tolist() == order.tolist() and o[inv].tolist() == list(range(12))


def _direct(q, k, v, spans, cfg, mask=None):
    """Every row guided, computed directly in float64: explicit concatenations of each key set, softmax
    attention, NAG's rule on the heads-merged image outputs."""
    q, k, v = q.double(), k.double(), v.double()
    length = q.shape[2]
    pos, neg, img = (idx(s) for s in spans.split(length))
    out = torch.zeros(q.shape, dtype=torch.float64)

    def att(queries, keys):
        m = None if mask is None else mask[..., keys]
        if m is not None and m.shape[-2] == length:
            m = m[..., queries, :]
        if m is not None and m.dtype == torch.bool:
            m = torch.zeros(m.shape, dtype=torch.float64).masked_fill(~m, -math.inf)
        return ref_attend(q[:, :, queries], k[:, :, keys], v[:, :, keys], m)
    out[:, :, pos] = att(pos, torch.cat([pos, img]))
    out[:, :, neg] = att(neg, torch.cat([neg, img]))
    zp, zn = att(img, torch.cat([pos, img])), att(img, torch.cat([neg, img]))
    g = nag_combine(heads_merged(zp), heads_merged(zn), cfg.scale, cfg.tau, cfg.alpha)
    out[:, :, img] = g.reshape(g.shape[0], g.shape[1], q.shape[1], -1).transpose(1, 2)
    return out


def _key_padding(b, length, pad, seed):
    """A bool key mask (B, 1, 1, L): ``pad`` random keys of each row dropped (True = attend)."""
    g = torch.Generator().manual_seed(seed)
    m = torch.ones(b, 1, 1, length, dtype=torch.bool)
    for r in range(b):
        m[r, 0, 0, torch.randperm(length, generator=g)[:pad]] = False
    return m


@pytest.mark.parametrize("b,h,lp,ln,li,d", [(1, 1, 3, 2, 5, 4), (2, 3, 7, 9, 11, 8), (1, 24, 16, 4, 33, 4),
                                             (3, 2, 1, 1, 2, 16)])
@pytest.mark.parametrize("text_first", [True, False])
@pytest.mark.parametrize("masked", [None, "keys", "queries"])
def test_guided_call_equals_the_direct_computation_fp32(b, h, lp, ln, li, d, text_first, masked):
    """float32 inputs through the default partial attentions (torch's fused kernels unmasked, the reference
    with a mask) against the float64 direct computation: several shapes, head counts, key masks and
    per-query masks."""
    g = torch.Generator().manual_seed(b * 100 + h + lp)
    length = lp + ln + li
    q, k, v = (torch.randn(b, h, length, d, generator=g) for _ in range(3))
    spans = JointSpans(text_first, lp + ln, ln)
    cfg = NAGConfig(scale=5.0, tau=2.0, alpha=0.5)
    mask = None
    if masked == "keys":
        mask = _key_padding(b, length, min(2, lp + ln - 1), seed=length)
        pos, neg, img = spans.split(length)
        mask[:, ..., img] = True            # padding in the texts only: every query keeps its image keys
    elif masked == "queries":               # additive, per query: keys from 3 after the query on removed, so some
        mask = torch.zeros(1, 1, length, length)                     # queries have a part with no key at all
        mask[0, 0][tuple(torch.triu_indices(length, length, 3))] = -math.inf
    out = nag_joint_attention(q, k, v, spans, [slice(0, b)], cfg, lambda *a: pytest.fail("host attention called"),
                              mask=mask)
    assert out.dtype == torch.float32 and out.shape == q.shape
    assert out.transpose(1, 2).is_contiguous()      # token-major: the host's reshape is a view
    torch.testing.assert_close(out.double(), _direct(q, k, v, spans, cfg, mask), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("text_first", [True, False])
@pytest.mark.parametrize("guided", [[slice(0, 3)], [slice(1, 3)], [slice(0, 1), slice(2, 3)]])
def test_identities_are_bit_exact(text_first, guided):
    """The NAG negative equal to the positive gives the output of scale 1 and of alpha 0 bit for bit (every
    row, the negative text's rows included), and scale 1 / alpha 0 give the same output as each other."""
    q, k, v, spans = (t.float() if isinstance(t, torch.Tensor) else t for t in make(lp=4, ln=4, li=9,
                                                                                    text_first=text_first))
    pos, neg, _ = spans.split(q.shape[2])
    for t in (k, v):
        t[:, :, neg] = t[:, :, pos]

    def run(**kw):
        return nag_joint_attention(q, k, v, spans, guided, NAGConfig(**kw), lambda a, b_, c, m: ref_attend(a, b_, c, m))
    same = run(scale=11.0, tau=2.5, alpha=0.25)
    off_scale, off_alpha = run(scale=1.0, tau=2.5, alpha=0.25), run(scale=11.0, tau=2.5, alpha=0.0)
    assert torch.equal(same, off_scale) and torch.equal(same, off_alpha)
    q2 = q.clone()
    q2[:, :, neg] = q[:, :, pos]
    k2, v2 = k.clone(), v.clone()
    k2[:, :, neg], v2[:, :, neg] = k[:, :, pos] + 1, v[:, :, pos] * 2           # a real negative: guidance acts
    moved = nag_joint_attention(q2, k2, v2, spans, guided, NAGConfig(scale=11.0, tau=2.5, alpha=0.25),
                                lambda a, b_, c, m: ref_attend(a, b_, c, m))
    img = spans.split(q.shape[2])[2]
    assert not torch.equal(moved[guided[0], :, img], same[guided[0], :, img])


def _copies_of(k, v, fn):
    """The aten ops of ``fn()`` that read ``k``'s or ``v``'s storage into a new tensor (cat, index_select,
    clone, copy, contiguous)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    storages = {k.untyped_storage().data_ptr(), v.untyped_storage().data_ptr()}
    copying = ("cat", "index_select", "clone", "copy_", "_to_copy", "index", "gather", "stack")
    seen = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            flat = [a for a in args if isinstance(a, torch.Tensor)]
            flat += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
            if name in copying and any(t.untyped_storage().data_ptr() in storages for t in flat):
                seen.append(name)
            return func(*args, **(kwargs or {}))
    with Spy():
        fn()
    return seen


@pytest.mark.parametrize("text_first", [True, False])
def test_guided_rows_copy_no_key_or_value(text_first):
    """The guided rows read the joint keys and values in place (three views); the check itself sees the one
    [positive text, image] copy of the unguided rows."""
    q, k, v, spans = (t.float() if isinstance(t, torch.Tensor) else t for t in make(b=2, text_first=text_first))
    cfg = NAGConfig(scale=5.0, tau=2.0, alpha=0.5)

    def call(guided):
        return lambda: nag_joint_attention(q, k, v, spans, guided, cfg, lambda a, b_, c, m: ref_attend(a, b_, c, m))
    assert _copies_of(k, v, call([slice(0, 2)])) == []
    assert "cat" in _copies_of(k, v, call([slice(1, 2)]))      # row 0 unguided: its host attention's copy
    assert "cat" in _copies_of(k, v, call([]))


@pytest.mark.parametrize("guided", [[slice(0, 2)], [slice(1, 2)]])
@pytest.mark.parametrize("masked", [False, True])
def test_order_reads_an_interleaved_text_in_place(guided, masked):
    """HiDream's [image, +, -, +, -] read through ``order``: the output in the host's order equals the call on
    the sequence reordered to [image, +, +, -, -] and reordered back; guided rows copy only text-sized pieces
    of the keys and values (no image-sized copy), the unguided row its [image, positive text]."""
    seg = TextSegments(((3, 2), (2, 4)))
    image = 9
    length = image + seg.text
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 3, length, 8, generator=g) for _ in range(3))
    order = seg.order(image)
    inverse = torch.argsort(order)
    mask = None
    if masked:
        mask = torch.ones(2, 1, 1, length, dtype=torch.bool)
        mask[1, ..., image + 1] = False                  # a positive T5 token of row 1 is padding
    cfg = NAGConfig(scale=5.0, tau=2.0, alpha=0.5)

    def attend(a, b_, c, m):
        return torch.nn.functional.scaled_dot_product_attention(a, b_, c, attn_mask=m)
    got = nag_joint_attention(q, k, v, seg.spans(), guided, cfg, attend, mask=mask, order=(order, inverse))
    laid = [t.index_select(2, order) for t in (q, k, v)]
    want = nag_joint_attention(*laid, seg.spans(), guided, cfg, attend,
                               mask=None if mask is None else mask.index_select(-1, order)).index_select(2, inverse)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert torch.isfinite(got).all()
    text_size = 3 * seg.text * 8
    if not masked:
        sizes = _copy_sizes(k, v, lambda: nag_joint_attention(q[:1], k[:1], v[:1], seg.spans(), [slice(0, 1)], cfg,
                                                              attend, order=(order, inverse)))
        assert sizes and max(sizes) <= text_size, sizes


def _copy_sizes(k, v, fn):
    """Elements of each new tensor ``fn()`` makes from ``k``'s or ``v``'s storage (cat, index_select, copies)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    storages = {k.untyped_storage().data_ptr(), v.untyped_storage().data_ptr()}
    copying = ("cat", "index_select", "clone", "copy_", "_to_copy", "index", "gather", "stack")
    sizes = []

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            flat = [a for a in args if isinstance(a, torch.Tensor)]
            flat += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
            if func.overloadpacket.__name__ in copying and any(t.untyped_storage().data_ptr() in storages for t in flat):
                sizes.append(out.numel() if isinstance(out, torch.Tensor) else 0)
            return out
    with Spy():
        fn()
    return sizes


def test_order_through_the_fused_graph(monkeypatch):
    """The fused kernel's path with ``order`` (its per-token kinds in the host's order; the graph run eagerly
    here) gives the eager path's output."""
    from nag import fused
    monkeypatch.setattr(fused, "compiled", lambda name: fused.guided_eager)
    seg = TextSegments(((2, 3), (4, 1)))
    image = 7
    length = image + seg.text
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, length, 8, generator=g) for _ in range(3))
    order = seg.order(image)
    args = (q, k, v, seg.spans(), [slice(0, 1)], NAGConfig(scale=5.0, tau=2.0, alpha=0.5),
            lambda *a: pytest.fail("host attention called"))
    with fused.policy("off"):
        want = nag_joint_attention(*args, order=(order, torch.argsort(order)))
    with fused.policy("on"):
        got = nag_joint_attention(*args, order=(order, torch.argsort(order)))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
