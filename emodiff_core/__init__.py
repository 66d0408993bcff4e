"""EMOdiffhead core: a pure-PyTorch implementation of "EMOdiffhead: Continuously Emotional Control in
Talking Head Generation via Diffusion" (Zhang, Mai, Zhang, 2024). It never imports ComfyUI."""

__version__ = "0.1.0"
