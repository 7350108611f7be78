"""ComfyUI node classes over the core package (imported relatively: ComfyUI has its own `nodes`)."""
from .comfy_model import register_folders
from .expand_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

register_folders()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
