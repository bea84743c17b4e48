"""ComfyUI node classes of the pack: thin glue over the pure-torch cores.

Each ``*_nodes`` module exposes ``NODE_CLASS_MAPPINGS`` and
``NODE_DISPLAY_NAME_MAPPINGS``; this module merges them. Every id carries the
``Atelier`` prefix so it never collides with another pack.
"""
from . import magcache_nodes, nag_nodes, dloral_nodes, restoration_nodes

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _mod in (magcache_nodes, nag_nodes, dloral_nodes, restoration_nodes):
    for _key in _mod.NODE_CLASS_MAPPINGS:
        if not _key.startswith("Atelier") or _key in NODE_CLASS_MAPPINGS:
            raise RuntimeError(f"bad or duplicate node id {_key!r} in {_mod.__name__}")
    NODE_CLASS_MAPPINGS.update(_mod.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_mod.NODE_DISPLAY_NAME_MAPPINGS)
