"""The A1111/Forge script, loaded by path as A1111 loads it, against small stand-ins for `modules`."""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKES = Path(__file__).resolve().parent / "a1111_fakes"


@pytest.fixture(scope="module")
def script(tmp_path_factory, tiny_model_dir, lora_dirs):
    models = tmp_path_factory.mktemp("webui") / "models"
    (models / "prompt_expander" / "loras").mkdir(parents=True)
    shutil.copytree(tiny_model_dir, models / "prompt_expander" / "tiny")
    shutil.copytree(lora_dirs["photo"], models / "prompt_expander" / "loras" / "tinystyle")
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_WEBUI_MODELS", str(models))
    mp.syspath_prepend(str(FAKES))
    for name in [m for m in sys.modules if m == "modules" or m.startswith("modules.")] + ["gradio", "launch"]:
        sys.modules.pop(name, None)
    spec = importlib.util.spec_from_file_location("prompt_expander_script", ROOT / "scripts" / "prompt_expander.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from modules import script_callbacks
    for cb in script_callbacks.ui_settings:
        cb()
    yield module
    mp.undo()


def make_p(prompts, seeds, **kw):
    from modules.processing import FakeProcessing
    return FakeProcessing(prompts, seeds, **kw)


def args(**kw):
    from prompt_expander.host.webui import Options
    return list(vars(Options(**{"enabled": True, "model": "tiny", **kw})).values())


def run(script, p, **kw):
    s = script.PromptExpanderScript()
    s.ui(False)
    s.process(p, *args(**kw))
    return s


def core_expand(tiny_model_dir, text, seed, **kw):
    from prompt_expander.expansion.resident import load_expander
    return load_expander(str(tiny_model_dir)).expand(text, seed, **kw).text


def test_script_shape_and_ui(script):
    import modules.scripts
    s = script.PromptExpanderScript()
    assert s.title() == "Prompt Expander" and s.show(False) is modules.scripts.AlwaysVisible
    comps = s.ui(False)
    assert len(comps) == 16  # the API args, in Options order; contrast, candidates, pick_words, contrast_words last
    assert comps[1].args[0] == ["default", "tiny"] and comps[2].args[0] == ["None", "anime", "on-topic", "photo", "tinystyle"]
    assert {k for _, k in s.infotext_fields if isinstance(k, str)} == {"Prompt Expander"}  # the rest: readers
    from modules import shared
    assert shared.opts.prompt_expander_device == "GPU" and shared.opts.prompt_expander_keep_loaded is False
    assert "modules" not in [Path(p).name for p in sys.path if Path(p).resolve() == ROOT]


def test_the_gpu_gets_fp32_so_a_seed_writes_the_same_text_as_on_a_cpu(script, monkeypatch):
    import torch
    from modules import devices, shared
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(devices, "device", cuda)
    assert script.pick_device() == (cuda, torch.float32)

    class ForgeMemory:  # Forge's backend.memory_management, which would run its text encoders in fp16
        @staticmethod
        def text_encoder_device():
            return torch.device("cuda", 1)

        @staticmethod
        def should_use_fp16(*a, **kw):
            return True

    monkeypatch.setattr(script, "_forge_memory", lambda: ForgeMemory)
    assert script.pick_device() == (torch.device("cuda", 1), torch.float32)
    monkeypatch.setattr(shared.opts, "prompt_expander_device", "CPU", raising=False)
    assert script.pick_device() == (torch.device("cpu"), "auto")


def test_per_image_expansion_matches_core_and_keeps_lora_tags(script, tiny_model_dir):
    prompts = ["a castle <lora:film:0.6>", "a castle <lora:film:0.6>", "a red fox", "a robot, (8k:1.2)"]
    seeds = [11, 12, 13, 14]
    p = make_p(prompts, seeds, batch_size=2)  # batch size 2 x batch count 2
    run(script, p)
    for i in range(4):
        assert p.all_prompts[i] == core_expand(tiny_model_dir, prompts[i], seeds[i])
        assert p.all_prompts[i].startswith(prompts[i])
    assert "<lora:film:0.6>" in p.all_prompts[0] and p.all_prompts[0] != p.all_prompts[1]
    assert p.main_prompt == p.all_prompts[0]


def test_same_results_whatever_the_batch_size(script):
    prompts, seeds = ["a castle"] * 4, [5, 6, 7, 8]
    together = make_p(prompts, seeds, batch_size=4)
    run(script, together)
    for i in range(4):
        alone = make_p([prompts[i]], [seeds[i]])
        run(script, alone)
        assert alone.all_prompts[0] == together.all_prompts[i]


def test_infotext_and_paste_back_restore_the_original(script):
    from modules import script_callbacks
    p = make_p(["a castle", "a robot"], [1, 2], negatives=["ugly", "ugly"])
    run(script, p, lora="tinystyle", lora_strength=0.5, temperature=0.7, budget=20, blocklist="dragon, ship")
    info = p.infotext(1)
    assert info["Prompt Expander"] == "tiny" and info["Prompt Expander LoRA"] == "tinystyle:0.5"
    assert info["Prompt Expander temperature"] == 0.7 and info["Prompt Expander budget"] == 20
    assert info["Prompt Expander seed"] == "image" and info["Prompt Expander original"] == "a robot"
    assert info["Prompt"] != "a robot"
    for cb in script_callbacks.infotext_pasted:
        cb("raw infotext", info)
    assert info["Prompt"] == "a robot"
    s = script.PromptExpanderScript()
    comps = s.ui(False)
    values = {}
    for comp, reader in s.infotext_fields:
        values[comp] = reader(info) if callable(reader) else info.get(reader)
    ordered = [values[c] for c in comps]
    assert ordered[0] is True and ordered[1] == "tiny" and ordered[2] == "tinystyle" and ordered[3] == 0.5
    assert ordered[9] == "dragon, ship"
    # "generate" again from the restored fields reproduces the image's prompt exactly
    again = make_p([info["Prompt"]], [info["Seed"]], negatives=["ugly"])
    script.PromptExpanderScript().process(again, *ordered)
    assert again.all_prompts[0] == p.all_prompts[1]


def test_hires_and_negative_handling(script, tiny_model_dir):
    p = make_p(["a castle", "a castle"], [3, 4], negatives=["blurry", "blurry"], enable_hr=True,
               hr_prompts=["a castle", "a castle, hires detail"])
    run(script, p, expand_negative=True)
    assert p.all_hr_prompts[0] == p.all_prompts[0]
    assert p.all_hr_prompts[1] == core_expand(tiny_model_dir, "a castle, hires detail", 4)
    assert p.all_negative_prompts[0].startswith("blurry, ") and p.all_negative_prompts[0] != "blurry"
    info = p.infotext(1)
    assert info["Prompt Expander original negative"] == "blurry"
    assert info["Prompt Expander original hires"] == "a castle, hires detail"
    off = make_p(["a castle"], [3], enable_hr=True)
    run(script, off, apply_hires=False)
    assert off.all_hr_prompts == ["a castle"] and off.all_prompts[0] != "a castle"


def test_fixed_seed_mode(script, tiny_model_dir):
    p = make_p(["a castle", "a castle"], [1, 2])
    run(script, p, seed_mode="fixed", fixed_seed=77)
    assert p.all_prompts[0] == p.all_prompts[1] == core_expand(tiny_model_dir, "a castle", 77)
    assert p.infotext(0)["Prompt Expander seed"] == 77


def test_errors_are_shown_not_lost(script, capsys):
    p = make_p(["a castle"], [1])
    run(script, p, model="missing-model")
    assert p.all_prompts == ["a castle"]  # the job still runs, unexpanded
    assert "no Prompt Expander model named 'missing-model'" in p.extra_generation_params["Prompt Expander error"]
    assert "expansion skipped" in capsys.readouterr().out
    disabled = make_p(["a castle"], [1])
    script.PromptExpanderScript().process(disabled, *args(enabled=False))
    assert disabled.all_prompts == ["a castle"] and not disabled.extra_generation_params


def test_offload_after_use(script):
    from modules import devices
    devices.gc_calls.clear()
    run(script, make_p(["a castle"], [1]))
    assert devices.gc_calls == []  # already on the CPU: nothing to offload


def test_install_py_does_nothing_when_requirements_are_present(monkeypatch, tmp_path):
    import launch
    spec = importlib.util.spec_from_file_location("pe_install", ROOT / "install.py")
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    monkeypatch.setattr(subprocess, "check_call", lambda *a, **k: pytest.fail("pip ran"))
    launch.installed.update({"torch", "transformers", "safetensors", "accelerate", "tqdm", "pillow", "peft"})
    launch.pip_calls.clear()
    assert install.main() == 0 and install.main() == 0  # twice: still nothing to do
    assert launch.pip_calls == []
    launch.installed.discard("peft")
    install.main()
    assert len(launch.pip_calls) == 1 and "peft" in launch.pip_calls[0] and '-c "' in launch.pip_calls[0]
    monkeypatch.delitem(sys.modules, "launch")
    monkeypatch.setattr(install, "_launch", lambda: None)
    assert install.missing() == []  # standalone: everything importable here


def test_install_py_pins_peft_for_old_transformers(monkeypatch):
    spec = importlib.util.spec_from_file_location("pe_install2", ROOT / "install.py")
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    monkeypatch.setattr(install, "version_of", lambda d: {"transformers": "4.30.2"}.get(d))
    assert install.peft_requirement() == "peft==0.13.2"
    monkeypatch.setattr(install, "version_of", lambda d: {"transformers": "4.46.1"}.get(d))
    assert install.peft_requirement() == "peft==0.13.2"
    monkeypatch.setattr(install, "version_of", lambda d: {"transformers": "5.23.0"}.get(d))
    assert install.peft_requirement() == "peft>=0.13.2"
    monkeypatch.setattr(install, "version_of", lambda d: {"torch": "2.13.0", "transformers": "4.30.2"}.get(d))
    text = Path(install.constraints_file()).read_text()
    assert "torch==2.13.0" in text and "transformers==4.30.2" in text


def _paste(script, info):
    from modules import script_callbacks
    for cb in script_callbacks.infotext_pasted:
        cb("raw infotext", info)
    s = script.PromptExpanderScript()
    comps = s.ui(False)
    values = {comp: reader(info) if callable(reader) else info.get(reader) for comp, reader in s.infotext_fields}
    return [values[c] for c in comps]


def test_a_long_original_is_stored_cut_and_then_not_pasted_back(script):
    from prompt_expander.host.webui import INFOTEXT_ORIGINAL_MAX
    long_prompt = "a castle on a hill, " * 500
    p = make_p([long_prompt, "a robot"], [1, 2])
    run(script, p)
    info = p.infotext(0)
    assert info["Prompt Expander original"] == long_prompt[:INFOTEXT_ORIGINAL_MAX]
    assert info["Prompt Expander original cut"] == f"first {INFOTEXT_ORIGINAL_MAX} of {len(long_prompt)} characters"
    assert p.infotext(1)["Prompt Expander original cut"] == ""  # the short one in the same batch is whole
    expanded = info["Prompt"]
    ordered = _paste(script, info)
    assert info["Prompt"] == expanded and ordered[0] is False  # the image's prompt as it was, script off


def test_an_empty_prompt_writes_no_keys_so_pasting_leaves_the_script_off(script):
    p = make_p(["", "  "], [1, 2])
    run(script, p)
    assert p.all_prompts == ["", "  "]
    info = p.infotext(0)
    assert not [k for k in info if k.startswith("Prompt Expander")]
    assert _paste(script, info)[0] is False


def test_a_hires_prompt_equal_to_the_prompt_is_not_expanded_twice(script, monkeypatch):
    from prompt_expander.expansion.expander import Expander
    calls = []
    real = Expander.expand
    monkeypatch.setattr(Expander, "expand", lambda self, text, *a, **kw: calls.append(text) or real(self, text, *a, **kw))
    p = make_p(["a castle", "a robot"], [3, 4], enable_hr=True, hr_prompts=["a castle", "a robot, hires detail"])
    run(script, p)
    assert sorted(calls) == ["a castle", "a robot", "a robot, hires detail"]


@pytest.mark.parametrize("name, value, key, off, arg, also", [
    ("contrast", 0.8, "Prompt Expander contrast", 0.0, -4, {}),
    ("candidates", 3, "Prompt Expander candidates", -1, -3, {}),
    ("pick_words", 2, "Prompt Expander pick words", -1, -2, {"candidates": 3}),
    ("contrast_words", 2, "Prompt Expander contrast words", -1, -1, {"contrast": 1.0})])
def test_a_setting_reaches_the_core_is_stored_and_pasted_back(script, tiny_model_dir, name, value, key, off, arg, also):
    """contrast, candidates, pick_words and contrast_words, the newest API args (arg: their place from the end)."""
    p = make_p(["a castle"], [3])
    run(script, p, **{name: value}, **also)
    assert p.all_prompts[0] == core_expand(tiny_model_dir, "a castle", 3, **{name: value}, **also)
    info = p.infotext(0)
    assert info[key] == value
    assert _paste(script, info)[arg] == value
    plain = make_p(["a castle"], [3])
    run(script, plain)
    assert key not in plain.infotext(0)  # off: nothing new in old-style infotexts
    assert _paste(script, plain.infotext(0))[arg] == off


def test_api_args_are_read_as_their_fields_types(script, tiny_model_dir):
    """An API caller may send numbers as strings, whole numbers as floats (gradio's Number does) or null."""
    p = make_p(["a castle"], [3])
    run(script, p, temperature="0.5", budget=None, seed_mode="fixed", fixed_seed="77", candidates=2.0,
        safe_mode="false")
    assert p.all_prompts[0] == core_expand(tiny_model_dir, "a castle", 77, temperature=0.5, candidates=2,
                                           safe_mode=False)
    assert p.infotext(0)["Prompt Expander seed"] == 77


@pytest.mark.parametrize("field, value, message", [
    ("temperature", "hot", "temperature must be a number, got 'hot'"),
    ("candidates", 2.5, "candidates must be a whole number, got 2.5"),
    ("fixed_seed", "seven", "fixed_seed must be a whole number, got 'seven'"),
    ("safe_mode", "maybe", "safe_mode must be true or false, got 'maybe'"),
    ("contrast", float("nan"), "contrast must be a number, got nan"),
])
def test_an_api_arg_that_cannot_be_read_is_reported_and_the_job_runs(script, capsys, field, value, message):
    p = make_p(["a castle"], [1])
    run(script, p, **{field: value})
    assert p.all_prompts == ["a castle"]
    assert p.extra_generation_params["Prompt Expander error"] == "Prompt Expander: " + message
    assert message in capsys.readouterr().out
    off = make_p(["a castle"], [1])
    script.PromptExpanderScript().process(off, *args(enabled="false", temperature="hot"))
    assert off.all_prompts == ["a castle"] and not off.extra_generation_params


def test_an_edited_infotext_with_nonsense_numbers_still_pastes(script):
    info = {"Prompt Expander": "tiny", "Prompt Expander temperature": "warm", "Prompt Expander budget": "lots",
            "Prompt Expander candidates": "many", "Prompt Expander contrast": "", "Prompt Expander LoRA": "photo:x",
            "Prompt Expander seed": "12a"}
    values = dict(zip(_field_names(), _paste(script, info)))
    assert values["enabled"] is True and values["model"] == "tiny"
    # None: the host leaves such a field as it is
    assert [values[k] for k in ("temperature", "budget", "candidates", "contrast", "lora_strength")] == [None] * 5
    assert values["seed_mode"] == "fixed" and values["fixed_seed"] == 0
    whole = dict(zip(_field_names(), _paste(script, {"Prompt Expander": "tiny", "Prompt Expander budget": "75.0",
                                                     "Prompt Expander candidates": "4"})))
    assert (whole["budget"], whole["candidates"]) == (75, 4)


def _field_names():
    from prompt_expander.host.webui import Options
    return list(Options.__dataclass_fields__)
