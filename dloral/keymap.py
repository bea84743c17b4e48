"""Module names of the SD2 UNet: diffusers naming (the DLoRAL checkpoint) -> LDM naming (the host).

The mapping is derived from the module names themselves (how many resnets a down block has,
which up blocks carry attention), so it works for the full SD2.1 UNet and for the small test
UNets alike. Names are module paths without the ``.weight``/``.bias`` suffix.
"""
import re
from typing import Iterable, Set

__all__ = ["UNetLayout", "layout_from_names", "diffusers_to_ldm"]

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_TOP = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0", "conv_out": "out.2"}


class UNetLayout:
    """What the mapping needs to know about a UNet: resnets per down block, blocks with attention."""

    def __init__(self, layers_per_block: int, num_blocks: int, up_attention: Iterable[int]) -> None:
        self.layers_per_block = layers_per_block
        self.num_blocks = num_blocks
        self.up_attention = frozenset(up_attention)

    def __repr__(self) -> str:
        return (f"UNetLayout(layers_per_block={self.layers_per_block}, num_blocks={self.num_blocks}, "
                f"up_attention={sorted(self.up_attention)})")


def layout_from_names(names: Iterable[str]) -> UNetLayout:
    """Infer the layout from diffusers module (or parameter) names."""
    res, blocks = -1, -1
    up_att: Set[int] = set()
    for n in names:
        m = re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.", n + ".")
        if m:
            blocks = max(blocks, int(m.group(1)))
            if m.group(1) == "0":
                res = max(res, int(m.group(2)))
        m = re.match(r"up_blocks\.(\d+)\.attentions\.", n)
        if m:
            up_att.add(int(m.group(1)))
    if res < 0:
        raise ValueError("UNet names: no 'down_blocks.0.resnets.*' found, cannot infer the UNet layout")
    return UNetLayout(res + 1, blocks + 1, up_att)


def _inner_resnet(rest):
    head, _, tail = rest.partition(".")
    if head not in _RESNET:
        raise KeyError(head)
    return _RESNET[head] + ("." + tail if tail else "")


def diffusers_to_ldm(name: str, layout: UNetLayout) -> str:
    """Map one diffusers module name to LDM naming; raises KeyError for an unknown name.

    >>> lay = UNetLayout(2, 4, {1, 2, 3})
    >>> diffusers_to_ldm("down_blocks.1.resnets.0.conv1", lay)
    'input_blocks.4.0.in_layers.2'
    """
    for k, v in _TOP.items():
        if name == k or name.startswith(k + "."):
            return v + name[len(k):]
    n = layout.layers_per_block
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)(?:\.(.*))?$", name)
    if m:
        i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4) or ""
        idx = 1 + i * (n + 1) + j
        if kind == "resnets":
            return f"input_blocks.{idx}.0." + _inner_resnet(rest)
        return f"input_blocks.{idx}.1" + ("." + rest if rest else "")
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv(?:\.(.*))?$", name)
    if m:
        return f"input_blocks.{(int(m.group(1)) + 1) * (n + 1)}.0.op" + (
            "." + m.group(2) if m.group(2) else "")
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)(?:\.(.*))?$", name)
    if m:
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3) or ""
        if kind == "resnets":
            return f"middle_block.{2 * j}." + _inner_resnet(rest)
        return "middle_block.1" + ("." + rest if rest else "")
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)(?:\.(.*))?$", name)
    if m:
        i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4) or ""
        idx = i * (n + 1) + j
        if kind == "resnets":
            return f"output_blocks.{idx}.0." + _inner_resnet(rest)
        return f"output_blocks.{idx}.1" + ("." + rest if rest else "")
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv(?:\.(.*))?$", name)
    if m:
        i = int(m.group(1))
        slot = 2 if i in layout.up_attention else 1
        return f"output_blocks.{i * (n + 1) + n}.{slot}.conv" + ("." + m.group(2) if m.group(2) else "")
    raise KeyError(name)
