"""ComfyUI entry point: ComfyUI imports this folder as a package named after the checkout directory."""
try:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    WEB_DIRECTORY = "./web/js"
except ImportError as e:  # imported outside ComfyUI (e.g. by A1111's extension scan or pytest)
    if "folder_paths" not in str(e) and "comfy" not in str(e):
        raise
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
