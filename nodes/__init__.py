"""ComfyUI node classes (thin adapters over emodiffhead_core)."""
NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
