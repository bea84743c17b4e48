"""Shared set-up for the benchmarks that run through a real ComfyUI host: find the tree, force CPU
unless a GPU is wanted, and import the pack as a package the way ComfyUI does (under a name of our
choosing), so that its relative imports resolve.

    host, pack, sub = host_and_pack("bench_magcache")   # sub("tinywan") -> the pack's submodule
"""
import importlib
import importlib.util
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PACK_NAME = "atelier_bench_pack"


def host_and_pack(who, cpu=True, progress_bars=False):
    """Returns ``(host_dir, pack_module, submodule)`` or exits naming ``who`` when no tree is found."""
    sys.path.insert(0, str(REPO / "tests"))
    from _testenv import find_comfyui
    host = find_comfyui()
    if host is None:
        sys.exit(f"{who}: no ComfyUI tree found; set COMFYUI_DIR (see README, 'Tests')")
    sys.path.insert(0, str(host))
    from comfy.cli_args import args as host_args
    host_args.cpu = bool(cpu)
    if PACK_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_NAME, REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        pack = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = pack
        spec.loader.exec_module(pack)
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = bool(progress_bars)
    return host, sys.modules[PACK_NAME], lambda name: importlib.import_module(f"{PACK_NAME}.{name}")
