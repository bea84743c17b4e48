"""NAG on the standalone tiny Wan (``tinywan``) without the host: the core's
``nag_cross_attention`` plugged into ``TinyWan.run_blocks`` through ``cross_attn_fn``.
Used by the core tests and ``bench/bench_nag.py``."""
import torch

from nag import NAGConfig, nag_cross_attention
from tinywan import data
from tinywan.model import attention


def nag_block_stack(model, negative_prompt, config=NAGConfig(), counter=None):
    """A ``block_stack_fn`` for ``tinywan.sample.sample`` that guides the cond branch with NAG.

    The negative is projected through ``model.text_embedding`` once (on first use) and cached;
    ``counter["projections"]`` counts that. Uncond calls (cfg > 1) run plainly.
    """
    cache = {}
    counter = counter if counter is not None else {}
    counter.setdefault("projections", 0)

    def negative(device, dtype):
        key = (str(device), dtype)
        if key not in cache:
            ctx = data.encode_prompt(negative_prompt)[None].to(device=device, dtype=dtype)
            cache[key] = model.text_embedding(ctx)
            counter["projections"] += 1
        return cache[key]

    def block_stack(tokens, aux, branch, step):
        if branch != "cond" or not config.enabled:
            return model.run_blocks(tokens, aux)
        neg = negative(tokens.device, tokens.dtype)

        def cross(index, module, x, context, context_img_len):
            return nag_cross_attention(module, x, context, neg,
                                       lambda q, k, v: attention(q, k, v, module.heads),
                                       [slice(0, x.shape[0])], config, context_img_len)

        return model.run_blocks(tokens, aux, cross_attn_fn=cross)

    return block_stack
