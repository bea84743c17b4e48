"""The DLoRAL CLI with a stand-in loader (tiny random-weight models, ``tests/_dloral_models.py``): what
``scripts/dloral_cli.py`` is with the host's loader, for the core tier's batch and Ray tests.

    python tests/_dloral_tiny_cli.py upscale INPUT... --out DIR --weights W --checkpoint ANY_FILE [flags]

``--prompt slow:SECONDS`` (the tiny models ignore the prompt) makes every UNet call sleep that long: a Ray
test then has time to kill a worker while it holds a chunk. The frames do not change.
"""
import sys
import time


def tiny_loader(request):
    """``LoadRequest`` -> the tiny models (the same for every request; seeded)."""
    import torch
    import _dloral_models
    torch.set_num_threads(1)
    m = _dloral_models.models()
    if request.prompt.startswith("slow:"):
        delay, unet = float(request.prompt[5:]), m.unet

        def slow(*args):
            time.sleep(delay)
            return unet(*args)
        m.unet = slow
    return m


if __name__ == "__main__":
    from dloral.__main__ import main
    sys.exit(main(sys.argv[1:], loader=tiny_loader, prog="tests/_dloral_tiny_cli.py"))
