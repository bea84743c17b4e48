"""Film-mask restoration core (pure torch + numpy/OpenCV/scipy; no ComfyUI import)."""
