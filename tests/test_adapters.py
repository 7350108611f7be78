"""LoRA adapters: pick, mix, switch without reloading, wrong base, round trip, merge."""
import pytest
import torch

from prompt_expander.expansion import resident
from prompt_expander.errors import AdapterError


def logits(model, text_ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([text_ids])).logits


def test_pick_mix_and_switch_without_reloading_the_base(expander, lora_dirs, monkeypatch):
    plain = expander.expand("a castle", seed=3).added
    photo = expander.expand("a castle", seed=3, styles=[str(lora_dirs["photo"])]).added
    assert photo != plain
    monkeypatch.setattr(resident, "load_model", lambda *a, **k: pytest.fail("base reloaded"))
    anime = expander.expand("a castle", seed=3, styles=[str(lora_dirs["anime"])]).added
    mixed = expander.expand("a castle", seed=3, styles=[(str(lora_dirs["photo"]), 0.5), (str(lora_dirs["anime"]), 0.5)])
    assert anime != photo and mixed.adapters == [["photo", 0.5], ["anime", 0.5]]
    # switching back gives exactly the earlier outputs: the base weights are restored, not drifted
    assert expander.expand("a castle", seed=3).added == plain
    assert expander.expand("a castle", seed=3, styles=[str(lora_dirs["photo"]) + ":1.0"]).added == photo


def test_style_weights_are_base_plus_weighted_deltas(expander, lora_dirs):
    ids = expander.tokenizer.encode("a castle, highly detailed")
    base = logits(expander.model_for_style(()), ids)
    name = expander.load_adapter(str(lora_dirs["photo"]))
    full = logits(expander.model_for_style(((name, 1.0),)), ids)
    half = logits(expander.model_for_style(((name, 0.5),)), ids)
    assert not torch.allclose(base, full)
    # LoRA deltas are linear in the weight, so halfway weights sit between (not exact through GELU/LN)
    assert (half - base).abs().mean() < (full - base).abs().mean()
    expander.model_for_style(())


def test_adapter_matches_peft_forward(tiny_model_dir, lora_dirs, expander):
    from peft import PeftModel
    from transformers import GPT2LMHeadModel
    ids = expander.tokenizer.encode("a dragon flying, 8k")
    ref = PeftModel.from_pretrained(GPT2LMHeadModel.from_pretrained(str(tiny_model_dir)), str(lora_dirs["anime"]))
    name = expander.load_adapter(str(lora_dirs["anime"]))
    ours = logits(expander.model_for_style(((name, 1.0),)), ids)
    assert torch.allclose(ours, logits(ref.eval(), ids), atol=1e-5)
    expander.model_for_style(())


def test_adapter_for_another_base_is_refused(other_model_dir, lora_dirs):
    exp = resident.load_expander(str(other_model_dir))
    with pytest.raises(AdapterError) as e:
        exp.expand("a cat", styles=[str(lora_dirs["photo"])])
    assert "tiny-gpt2" in str(e.value) and "other-gpt2" in str(e.value)
    assert exp.expand("a cat", seed=1).text.startswith("a cat")  # the base still works


def test_adapter_with_only_pickle_weights(lora_dirs, tmp_path, expander):
    import shutil
    d = tmp_path / "pickled"
    shutil.copytree(lora_dirs["photo"], d)
    (d / "adapter_model.safetensors").rename(d / "adapter_model.bin")
    with pytest.raises(AdapterError, match="pickle"):
        expander.load_adapter(str(d))


def test_unknown_adapter(expander):
    with pytest.raises(AdapterError, match="no adapter"):
        expander.load_adapter("no-such-style")


def test_style_switches_reach_the_fast_path_under_inference_mode(tiny_model_dir, lora_dirs):
    """ComfyUI loads and runs nodes under inference_mode: a style switch must still reach the fast loop."""
    with torch.inference_mode():
        exp = resident.load_expander(str(tiny_model_dir), resident=False)
        for styles in ([], [str(lora_dirs["photo"])], [str(lora_dirs["anime"])], []):
            fast = exp.expand("a castle", seed=4, styles=styles).text
            assert fast == exp.expand("a castle", seed=4, styles=styles, fast=False).text


def test_adapters_are_known_by_folder_not_by_name(tiny_model_dir, lora_dirs, tmp_path):
    import shutil
    exp = resident.load_expander(str(tiny_model_dir), resident=False)
    same_name = tmp_path / "elsewhere" / "photo"
    shutil.copytree(lora_dirs["anime"], same_name)  # another adapter under the bundled style's name
    first = exp.load_adapter(str(lora_dirs["photo"]))
    second = exp.load_adapter(str(same_name))
    assert first == "photo" and second == str(same_name.resolve())
    a = exp.expand("a castle", seed=4, styles=[str(lora_dirs["photo"])]).text
    b = exp.expand("a castle", seed=4, styles=[str(same_name)]).text
    assert b == exp.expand("a castle", seed=4, styles=[str(lora_dirs["anime"])]).text and a != b


def test_an_adapter_retrained_in_place_is_reloaded(tiny_model_dir, lora_dirs, tmp_path):
    import os
    import shutil
    exp = resident.load_expander(str(tiny_model_dir), resident=False)
    folder = tmp_path / "style"
    shutil.copytree(lora_dirs["photo"], folder)
    before = exp.expand("a castle", seed=4, styles=[str(folder)]).text
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copyfile(lora_dirs["anime"] / name, folder / name)
        os.utime(folder / name, ns=(1, 1))  # a new signature even on a coarse-clock filesystem
    after = exp.expand("a castle", seed=4, styles=[str(folder)]).text
    assert after == exp.expand("a castle", seed=4, styles=[str(lora_dirs["anime"])]).text and after != before


def test_an_adapter_fits_its_base_in_any_dtype(tiny_model_dir, lora_dirs):
    """A base run in bf16 on CPU (a model's cpu_dtype) rounds its weights away from the exact fingerprint; the
    probe compares them within bf16's precision, so the style still loads, and gives the bf16 model's text."""
    exp = resident.load_expander(str(tiny_model_dir), dtype="bf16", resident=False)
    assert exp.model.dtype == torch.bfloat16
    out = exp.expand("a castle", seed=3, styles=[str(lora_dirs["photo"])])
    assert out.text.startswith("a castle") and out.adapters == [["photo", 1.0]]
    assert out.added == exp.expand("a castle", seed=3, styles=[str(lora_dirs["photo"])]).added


def test_the_probe_refuses_a_base_of_the_same_shape(tiny_model_dir, lora_dirs, tmp_path):
    import tiny
    twin = tiny.make_model_dir(tmp_path / "twin-gpt2", seed=11)  # tiny_model_dir's shape, other weights
    exp = resident.load_expander(str(twin), resident=False)
    with pytest.raises(AdapterError, match="twin-gpt2"):
        exp.expand("a cat", styles=[str(lora_dirs["photo"])])


def test_an_adapter_with_only_the_old_fingerprint_still_loads(tiny_model_dir, lora_dirs, tmp_path, expander):
    import json
    import shutil
    from prompt_expander.model.adapters import ADAPTER_META
    d = tmp_path / "older"
    shutil.copytree(lora_dirs["photo"], d)
    meta = json.loads((d / ADAPTER_META).read_text())
    del meta["base_probe"]
    (d / ADAPTER_META).write_text(json.dumps(meta))
    assert expander.expand("a castle", seed=3, styles=[str(d)]).added == \
        expander.expand("a castle", seed=3, styles=[str(lora_dirs["photo"])]).added
    meta["base_fingerprint"] = "0" * 16
    (d / ADAPTER_META).write_text(json.dumps(meta))
    with pytest.raises(AdapterError, match="trained for base"):
        expander.expand("a castle", styles=[str(d)])


@torch.no_grad()
def test_a_style_on_a_base_saved_in_fp16_keeps_fp16_values(tiny_model_dir, lora_dirs):
    """A base whose weights are fp16 values (saved in fp16, loaded in fp32) stays so when styled: the mix is
    the merge saved in fp16, and the fast loop multiplies it in fp16 as it does the base. A base with other
    fp32 values gets the exact fp32 mix."""
    from prompt_expander.expansion.decoding import Fp16ValuedWeight, fp16_weight_linear_available, holds_fp16_values
    from prompt_expander.expansion.expander import Expander
    from prompt_expander.model.loading import load_model, load_tokenizer
    for saved_in_fp16 in (True, False):  # a model of its own: the cached one is shared with other tests
        exp = Expander(load_model(tiny_model_dir, torch.device("cpu"), torch.float32), load_tokenizer(tiny_model_dir),
                       tiny_model_dir, "tiny-gpt2")
        params = dict(exp.model.named_parameters())
        if saved_in_fp16:  # the blocks only: the embeddings identify the base an adapter was trained for
            for k, p in params.items():
                if ".h." in k:
                    p.copy_(p.half().float())
        base = {k: p.detach().clone() for k, p in params.items()}
        name = exp.load_adapter(str(lora_dirs["photo"]))
        exp.model_for_style(((name, 0.7),))
        for k, delta in exp.adapters[name].items():
            want = base[k] + 0.7 * delta
            assert torch.equal(params[k], want.half().float() if saved_in_fp16 else want)
            assert holds_fp16_values(params[k]) == saved_in_fp16
        text = exp.expand("a castle", seed=4, styles=[(str(lora_dirs["photo"]), 0.7)]).text
        assert text == exp.expand("a castle", seed=4, styles=[(str(lora_dirs["photo"]), 0.7)], fast=False).text
        if saved_in_fp16 and fp16_weight_linear_available():  # the styled blocks still go to the fp16 matmul
            prepared = exp.model._prompt_expander_fast._packed
            assert all(isinstance(prepared[id(block.mlp.c_fc)][1], Fp16ValuedWeight)
                       for block in exp.model.transformer.h)
        exp.model_for_style(())
        assert all(torch.equal(params[k], base[k]) for k in exp.adapters[name])
