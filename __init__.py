"""Atelier: a ComfyUI node pack for fast, controllable video diffusion and art restoration.

ComfyUI imports this folder as a package under whatever name the folder has, so
everything inside the pack imports relatively. The cores (``magcache``, ``nag``,
``dloral``, ``restoration``, ``tinywan``) never import ``comfy``; only ``nodes``
touches the host. The nodes are registered through the V3 entry point ``comfy_entrypoint``.
"""
from .nodes import comfy_entrypoint

WEB_DIRECTORY = "./web"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
