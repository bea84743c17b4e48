"""Atelier: a ComfyUI node pack for fast, controllable video diffusion and art restoration.

ComfyUI imports this folder as a package under whatever name the folder has, so
everything inside the pack imports relatively. The cores (``magcache``, ``nag``,
``dloral``, ``restoration``, ``tinywan``) never import ``comfy``; only ``nodes``
touches the host.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
