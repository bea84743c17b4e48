"""DLoRAL one-step video super-resolution (Sun et al., NeurIPS 2025), pure torch.

- ``checkpoint``: safe loading of the official ``model.pkl`` and conversion to a small safetensors
  file (LoRA deltas in the host's SD2 UNet naming, the 8-channel conv_in, the CFR weights);
- ``cfr``: SpyNet flow, warping and the thresholded retrieval attention (chunked);
- ``pipeline``: the frame scheduler over (previous, current) pairs, one-step update, tiling;
- ``colorfix`` and ``tiling``: AdaIN / wavelet colour fixes, blended tiles and VAE tiling;
- ``resample``: Pillow's resize filters in torch (exact 8-bit results, or float) for the official
  frame preparation;
- ``lora``: LoRA in the forward pass, unmerged (no second copy of the base weights), adapters added as PEFT does;
- ``vae_attention``: the SD VAE's attention blocks in diffusers' arithmetic (the official decode to the bit);
- ``modcopy``: shallow module copies with a forward of their own (what the host's object patches receive);
- ``precision``: the compute dtype rule (CPU fp32 unless forced; GPU fp16/bf16).

No host imports here: the SD2.1 UNet and VAE are passed in as callables (``DLoRALModels``).
"""
from .checkpoint import (DLoRALWeights, load_official, convert_official, save_weights, load_weights,
                         convert_file, apply_lora, lora_delta)
from .lora import lora_module, lora_base, lora_scale
from .cfr import CFR, SpyNet, RetrievalAttention, flow_warp, cfr_fuse
from .colorfix import adain_color_fix, wavelet_color_fix, color_fix, COLOR_FIXES
from .pipeline import (LATENT_SCALE, PROCESSINGS, DLoRALConfig, DLoRALModels, prepare_frames, finish_frames,
                       process_pairs, upscale_video, upscale_frames)
from .resample import resize_u8, resize_float
from .tiling import tiles, tiled_decode, tiled_encode
from .precision import PRECISIONS, resolve_dtype
