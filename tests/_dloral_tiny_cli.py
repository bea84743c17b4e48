"""The DLoRAL CLI with a stand-in loader (tiny random-weight models, ``tests/_dloral_models.py``): what
``scripts/dloral_cli.py`` is with the host's loader, for the core tier's batch and Ray tests.

    python tests/_dloral_tiny_cli.py upscale INPUT... --out DIR --weights W --checkpoint ANY_FILE [flags]
"""
import sys


def tiny_loader(request):
    """``LoadRequest`` -> the tiny models (the same for every request; seeded)."""
    import torch
    import _dloral_models
    torch.set_num_threads(1)
    return _dloral_models.models()


if __name__ == "__main__":
    from dloral.__main__ import main
    sys.exit(main(sys.argv[1:], loader=tiny_loader, prog="tests/_dloral_tiny_cli.py"))
