"""ComfyUI node classes of the pack: thin glue over the pure-torch cores.

Each ``*_nodes`` module lists its V3 classes in ``NODES``; this module collects them and registers them with
the host through the V3 entry point :func:`comfy_entrypoint` (both supported hosts load it). Every id carries
the ``Atelier`` prefix so it never collides with another pack. ``NODE_CLASS_MAPPINGS`` /
``NODE_DISPLAY_NAME_MAPPINGS`` stay available here for scripts and tests; the pack's root module does not
export them, so the host registers the nodes through the entry point.
"""
from comfy_api.latest import ComfyExtension

from . import magcache_nodes, nag_nodes, dloral_nodes, restoration_nodes

NODES = []
NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _mod in (magcache_nodes, nag_nodes, dloral_nodes, restoration_nodes):
    for _key, _cls in _mod.NODE_CLASS_MAPPINGS.items():
        if not _key.startswith("Atelier") or _key in NODE_CLASS_MAPPINGS:
            raise RuntimeError(f"bad or duplicate node id {_key!r} in {_mod.__name__}")
        NODES.append(_cls)
    NODE_CLASS_MAPPINGS.update(_mod.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_mod.NODE_DISPLAY_NAME_MAPPINGS)


class AtelierExtension(ComfyExtension):
    """The pack as a V3 extension: its node list."""

    async def get_node_list(self):
        return list(NODES)


async def comfy_entrypoint() -> AtelierExtension:
    """What the host calls to load the pack (``nodes.load_custom_node``)."""
    return AtelierExtension()
