"""Shared fixtures: a tiny random GPT-2 model folder and LoRA adapters built once per session."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return tiny.make_model_dir(tmp_path_factory.mktemp("tiny") / "tiny-gpt2")


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory):
    return tiny.make_model_dir(tmp_path_factory.mktemp("other") / "other-gpt2", seed=7, n_embd=48)


@pytest.fixture(scope="session")
def lora_dirs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    return {name: tiny.make_lora_dir(tiny_model_dir, root / name, seed=i + 1) for i, name in enumerate(["photo", "anime"])}


@pytest.fixture
def expander(tiny_model_dir):
    from prompt_expander.expansion.resident import load_expander
    exp = load_expander(str(tiny_model_dir))
    exp._set_style(())
    return exp
