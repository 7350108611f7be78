"""ComfyUI entry point: ComfyUI imports this folder as a package named after the checkout directory."""
NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}
WEB_DIRECTORY = "./web/js"

# Outside ComfyUI (A1111's extension scan, pytest) there are no nodes to register. pytest imports this file
# as a plain module, with no package, when the checkout's folder name is not an identifier ("prompt-expander").
if __package__:
    try:
        from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811
    except ImportError as e:
        if "folder_paths" not in str(e) and "comfy" not in str(e):
            raise

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
