"""Shallow module copies with a forward of their own: how the pack changes a host module's arithmetic through
an object patch (``ModelPatcher.add_object_patch``) without touching the module itself.

The copy has the base's class, attributes and parameter dict (the same tensors, nothing copied), so its
state-dict keys, weight patches, device moves and casting are the base's; only ``forward`` (set on the
instance) differs. The base is recorded under a marker, so a copy of a copy copies the base: wrappers never stack.
"""
import copy
from typing import Callable

import torch


def forward_copy(base: torch.nn.Module, make_forward: Callable[[torch.nn.Module], Callable],
                 mark: str) -> torch.nn.Module:
    """A shallow copy of ``copied_from(base, mark)`` whose forward is ``make_forward(copy)``."""
    base = copied_from(base, mark)
    mod = copy.copy(base)
    mod.__dict__["forward"] = make_forward(mod)
    mod.__dict__[mark] = base
    return mod


def copied_from(module: torch.nn.Module, mark: str) -> torch.nn.Module:
    """The module a :func:`forward_copy` with ``mark`` was made from (``module`` itself when it is none)."""
    return module.__dict__.get(mark, module)
