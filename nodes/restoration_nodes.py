"""ComfyUI nodes for restoration (filled in by its issue)."""
NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
