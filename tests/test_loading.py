"""Loading: safetensors only, clear errors, community folder layouts, the resident cache."""
import shutil

import pytest
import torch

from prompt_expander.expansion import resident
from prompt_expander.model import loading
from prompt_expander.errors import ModelLoadError, UnsafeWeightsError


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_pickle_only_folder_is_refused(tiny_model_dir, tmp_path):
    d = copy_model(tiny_model_dir, tmp_path / "pickled")
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(UnsafeWeightsError, match="run arbitrary code") as e:
        resident.load_expander(str(d))
    assert "safe_serialization=True" in str(e.value)


def test_corrupt_safetensors_is_a_clear_error(tiny_model_dir, tmp_path):
    d = copy_model(tiny_model_dir, tmp_path / "corrupt")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="corrupt or incomplete"):
        resident.load_expander(str(d))


def test_a_broken_package_beside_transformers_is_not_blamed_on_the_weights(tiny_model_dir, monkeypatch):
    """Seen in ComfyUI 0.8.0 with a torchvision that could not load: transformers' lazy import of the model class
    failed, and the message said the weights were corrupt."""
    import transformers

    def broken(*args, **kwargs):
        raise ModuleNotFoundError("Could not import module 'GPT2LMHeadModel'")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", broken)
    with pytest.raises(ModelLoadError, match="could not import its model code") as e:
        loading.load_model(tiny_model_dir, torch.device("cpu"), torch.float32)  # not the resident cache
    assert "corrupt" not in str(e.value) and "GPT2LMHeadModel" in str(e.value)


def test_folder_without_tokenizer(tiny_model_dir, tmp_path):
    d = copy_model(tiny_model_dir, tmp_path / "notok")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (d / name).unlink()
    with pytest.raises(ModelLoadError, match="no tokenizer"):
        resident.load_expander(str(d))


def test_unknown_name_and_offline_hub_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PROMPT_EXPANDER_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelLoadError, match="no model folder"):
        resident.load_expander("not-a-folder")
    with pytest.raises(ModelLoadError, match="put it at") as e:
        resident.load_expander("Gustavosta/MagicPrompt-Stable-Diffusion")
    assert str(tmp_path / "models" / "MagicPrompt-Stable-Diffusion") in str(e.value)


def test_hf_style_community_folder_loads(tiny_model_dir, tmp_path):
    """A folder as transformers' save_pretrained writes it (tokenizer.json, GPT-2 conventions, no meta),
    like MagicPrompt, distilgpt2-stable-diffusion-v2, prompt-extend and Fooocus' expansion folder."""
    from transformers import GPT2LMHeadModel, GPT2TokenizerFast
    d = tmp_path / "community"
    GPT2LMHeadModel.from_pretrained(str(tiny_model_dir)).save_pretrained(str(d), safe_serialization=True)
    tok = GPT2TokenizerFast.from_pretrained(str(tiny_model_dir))
    tok.save_pretrained(str(d))
    (d / "positive.txt").write_text("highly detailed\n")  # Fooocus ships extra files beside the model
    exp = resident.load_expander(str(d))
    r = exp.expand("a castle", seed=1)
    assert r.text.startswith("a castle") and r.model == "community"


def test_second_call_is_a_cache_hit_without_disk_reads(tiny_model_dir, monkeypatch):
    first = resident.load_expander(str(tiny_model_dir))

    def boom(*a, **k):
        raise AssertionError("disk read on a warm call")
    monkeypatch.setattr(resident, "load_model", boom)
    monkeypatch.setattr(resident, "load_tokenizer", boom)
    monkeypatch.setattr(resident.ModelMeta, "read", boom)  # `auto` asks the card for its cpu_dtype once
    assert resident.load_expander(str(tiny_model_dir)) is first
    assert first.expand("a cat", seed=1).text == first.expand("a cat", seed=1).text


def test_changed_files_reload_and_unload_frees(tiny_model_dir, tmp_path):
    d = copy_model(tiny_model_dir, tmp_path / "m")
    a = resident.load_expander(str(d))
    assert resident.load_expander(str(d), dtype="fp32") is a
    (d / "prompt_expander.json").write_text('{"lowercase": true}')
    b = resident.load_expander(str(d))
    assert b is not a
    assert a not in resident.cached_expanders()
    assert resident.unload(b) == 1
    assert b not in resident.cached_expanders()


def test_default_model_missing_message(monkeypatch, tmp_path):
    monkeypatch.setattr(loading, "DEFAULT_MODEL", tmp_path / "nothing")
    with pytest.raises(ModelLoadError, match="train-base"):
        resident.load_expander(None)


def test_bad_dtype():
    with pytest.raises(ModelLoadError, match="dtype"):
        loading.resolve_dtype("fp8", loading.resolve_device("cpu"))


def test_loading_is_quiet_and_puts_the_hosts_logging_back(tiny_model_dir, lora_dirs, capfd):
    from transformers.utils import logging as hf_logging
    hf_logging.enable_progress_bar()
    hf_logging.set_verbosity_info()
    try:
        exp = resident.load_expander(str(tiny_model_dir), resident=False)
        exp.expand("a castle", seed=1, styles=[str(lora_dirs["photo"])])
        err = capfd.readouterr().err
        assert "Loading weights" not in err and "Warning" not in err, err
        assert hf_logging.is_progress_bar_enabled() and hf_logging.get_verbosity() == hf_logging.INFO
    finally:
        hf_logging.set_verbosity_warning()


def test_auto_dtype_is_fp32_on_gpus_too():
    """fp16 text differs from fp32 text for most seeds, so auto keeps a seed's prompt the same on a GPU and a CPU."""
    for device in (torch.device("cuda", 0), torch.device("mps"), torch.device("xpu")):
        assert loading.resolve_dtype("auto", device, "bf16") == torch.float32
    assert loading.resolve_dtype("fp16", torch.device("cuda", 0)) == torch.float16
    # A host loads on the CPU and moves the model: a GPU gets fp32 outright, a CPU the card's own choice.
    assert loading.dtype_to_load_for(torch.device("cuda", 0)) == torch.float32
    assert loading.dtype_to_load_for("cpu") == "auto"


@pytest.mark.parametrize("native", [True, False])
def test_auto_dtype_follows_the_models_cpu_dtype_where_the_cpu_runs_it(native, monkeypatch, tiny_model_dir, tmp_path):
    import json
    import shutil
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native)
    cpu = loading.resolve_device("cpu")
    assert loading.resolve_dtype("auto", cpu, "bf16") == (torch.bfloat16 if native else torch.float32)
    assert loading.resolve_dtype("auto", cpu, None) == torch.float32
    assert loading.resolve_dtype("fp32", cpu, "bf16") == torch.float32  # an explicit choice wins
    folder = tmp_path / "bf16-gpt2"
    shutil.copytree(tiny_model_dir, folder)
    meta = json.loads((folder / "prompt_expander.json").read_text())
    (folder / "prompt_expander.json").write_text(json.dumps({**meta, "cpu_dtype": "bf16"}))
    exp = resident.load_expander(str(folder), resident=False)
    assert exp.model.dtype == (torch.bfloat16 if native else torch.float32)
    assert exp.expand("a cat", seed=2).text.startswith("a cat")


def test_a_bad_cpu_dtype_is_a_clear_error(tiny_model_dir, tmp_path):
    import json
    import shutil
    folder = tmp_path / "odd-gpt2"
    shutil.copytree(tiny_model_dir, folder)
    meta = json.loads((folder / "prompt_expander.json").read_text())
    (folder / "prompt_expander.json").write_text(json.dumps({**meta, "cpu_dtype": "int4"}))
    with pytest.raises(ModelLoadError, match="cpu_dtype"):
        resident.load_expander(str(folder), resident=False)
