"""Test stand-in for ComfyUI's folder_paths (only what the node pack uses)."""
import os

models_dir = os.environ.get("FAKE_COMFY_MODELS", "/tmp/fake-comfy-models")
folder_names_and_paths = {}


def add_model_folder_path(folder_name, full_folder_path, is_default=False):
    paths = folder_names_and_paths.setdefault(folder_name, ([], set()))[0]
    if full_folder_path in paths:
        paths.remove(full_folder_path)
    paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)


def get_folder_paths(folder_name):
    return folder_names_and_paths[folder_name][0][:]
