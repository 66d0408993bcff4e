"""ComfyUI-EMOdiffhead: emotional talking heads (EMOdiffhead, Zhang et al. 2024) as ComfyUI nodes.

ComfyUI imports this file by path, so everything below uses relative imports. Importing it needs no
ComfyUI: the nodes import `folder_paths` and `comfy.*` lazily, when they run.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
