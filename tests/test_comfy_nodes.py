"""The ComfyUI node pack, loaded the way ComfyUI loads it, against small fakes of ComfyUI's modules."""
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
FAKES = Path(__file__).resolve().parent / "comfy_fakes"
CORE_NODES = {"CheckpointLoaderSimple": {"inputs": [], "widgets": 1}, "CLIPTextEncode": {"inputs": ["clip", "text"], "widgets": 1},
              "EmptyLatentImage": {"inputs": [], "widgets": 3},
              "KSampler": {"inputs": ["model", "positive", "negative", "latent_image"], "widgets": 6},
              "VAEDecode": {"inputs": ["samples", "vae"], "widgets": 0}, "SaveImage": {"inputs": ["images"], "widgets": 1}}


@pytest.fixture(scope="module")
def pack(tmp_path_factory, tiny_model_dir, other_model_dir, lora_dirs):
    """Import the repo as ComfyUI does: by path, from a folder whose name has a hyphen, as that package name."""
    base = tmp_path_factory.mktemp("ComfyUI")
    models = base / "models"
    (models / "prompt_expander" / "loras").mkdir(parents=True)
    shutil.copytree(tiny_model_dir, models / "prompt_expander" / "tiny")
    shutil.copytree(other_model_dir, models / "prompt_expander" / "other")
    shutil.copytree(lora_dirs["photo"], models / "prompt_expander" / "loras" / "tinystyle")
    (models / "prompt_expander" / "README.txt").write_text("not a model")
    elsewhere = base / "other-drive" / "linked"
    shutil.copytree(tiny_model_dir, elsewhere)
    (models / "prompt_expander" / "linked").symlink_to(elsewhere, target_is_directory=True)  # users do this
    custom = base / "custom_nodes"
    custom.mkdir()
    (custom / "prompt-expander-main").symlink_to(ROOT, target_is_directory=True)
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_COMFY_MODELS", str(models))
    mp.syspath_prepend(str(FAKES))
    for name in ("folder_paths", "comfy", "comfy.model_management", "comfy.model_patcher", "comfy.utils"):
        sys.modules.pop(name, None)
    init = custom / "prompt-expander-main" / "__init__.py"
    spec = importlib.util.spec_from_file_location("prompt-expander-main", init,
                                                  submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["prompt-expander-main"] = module
    spec.loader.exec_module(module)
    yield module
    mp.undo()


@pytest.fixture
def mm(pack):
    import comfy.model_management as mm
    mm.reset()
    return mm


def node(pack, name):
    return pack.NODE_CLASS_MAPPINGS[name]()


def test_node_contract(pack):
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS) == {
        "LoadPromptExpander", "ApplyExpanderStyle", "ExpandPrompt", "ExpandPromptEncode", "ExpandPromptVariations"}
    assert pack.WEB_DIRECTORY == "./web/js" and (ROOT / "web" / "js" / "prompt_expander.js").exists()
    # The frontend warns that scripts/widgets.js is internal and may break; app.js is its public entry.
    imports = [line for line in (ROOT / "web" / "js" / "prompt_expander.js").read_text().splitlines()
               if line.startswith("import ")]
    assert imports == ['import { app } from "../../scripts/app.js";']
    for cls in pack.NODE_CLASS_MAPPINGS.values():
        assert cls.CATEGORY == "prompt/expansion" and hasattr(cls, cls.FUNCTION)
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
        types = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, spec in types.get(section, {}).items():
                assert spec[1].get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
    load = pack.NODE_CLASS_MAPPINGS["LoadPromptExpander"].INPUT_TYPES()["required"]
    assert load["model"][0] == ["default (bundled)", "linked", "other", "tiny"]
    assert load["device"][0] == ["auto", "cpu", "gpu"] and load["dtype"][0] == ["auto", "fp32", "fp16", "bf16"]
    assert pack.NODE_CLASS_MAPPINGS["ApplyExpanderStyle"].INPUT_TYPES()["required"]["style"][0] == ["anime", "on-topic", "photo", "tinystyle"]
    exp = pack.NODE_CLASS_MAPPINGS["ExpandPrompt"]
    assert exp.RETURN_TYPES == ("STRING", "STRING") and exp.RETURN_NAMES == ("expanded", "added")
    assert exp.INPUT_TYPES()["required"]["seed"][1]["control_after_generate"] is True
    enc = pack.NODE_CLASS_MAPPINGS["ExpandPromptEncode"]
    assert enc.RETURN_TYPES == ("CONDITIONING", "STRING") and "clip" in enc.INPUT_TYPES()["required"]
    var = pack.NODE_CLASS_MAPPINGS["ExpandPromptVariations"]
    assert var.OUTPUT_IS_LIST == (True, True)
    assert not hasattr(exp, "IS_CHANGED")  # the inputs are the cache key: no forced re-runs


def test_wrapper_device_setter_and_memory_manager_calls(pack, mm):
    from transformers import GPT2LMHeadModel
    handle = node(pack, "LoadPromptExpander").load("tiny", "auto", "auto")[0]
    wrapper = handle.patcher.model
    wrapper.device = "cpu"  # what ModelPatcher does; the bare model cannot take it:
    with pytest.raises(AttributeError):
        GPT2LMHeadModel(wrapper.model.config).device = "cpu"
    node(pack, "ExpandPrompt").expand(handle, "a castle", 1, 0.8, 0, True)
    assert mm.calls == [("load", handle.patcher.load_device)]
    mm.unload_all_models()
    assert mm.calls[-1] == ("offload", handle.patcher.offload_device)


def test_auto_dtype_is_fp32_on_a_gpu_where_comfyui_would_use_fp16(pack, mm, monkeypatch):
    """A workflow's seed must write the same text on every machine: fp16 wrote another prompt for most seeds."""
    import sys
    import torch
    comfy_model = sys.modules["prompt-expander-main.nodes.comfy_model"]
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(mm, "get_torch_device", lambda: cuda)
    monkeypatch.setattr(mm, "text_encoder_device", lambda: cuda)
    monkeypatch.setattr(mm, "should_use_fp16", lambda *a, **kw: True)
    for device in ("auto", "gpu"):
        load, offload, dtype = comfy_model.pick_device_and_dtype(device, "auto")
        assert load == cuda and dtype == torch.float32
    assert comfy_model.pick_device_and_dtype("cpu", "auto")[2] == "auto"  # the core's: fp32 or the card's cpu_dtype
    assert comfy_model.pick_device_and_dtype("gpu", "fp16")[2] == torch.float16  # an explicit choice wins


def test_expand_end_to_end_and_metadata(pack, mm):
    handle = node(pack, "LoadPromptExpander").load("tiny", "cpu", "fp32")[0]
    prompt = {"7": {"class_type": "ExpandPrompt", "inputs": {"text": "a castle"}}}
    pnginfo = {"workflow": {"nodes": [{"id": 7, "type": "ExpandPrompt"}]}}
    out = node(pack, "ExpandPrompt").expand(handle, "(a castle:1.2) <lora:x:1>", 5, 0.8, 0, True,
                                            unique_id="7", extra_pnginfo=pnginfo, prompt=prompt)
    expanded, added = out["result"]
    assert expanded.startswith("(a castle:1.2) <lora:x:1>, ") and expanded.endswith(added)
    assert out["ui"]["text"] == [expanded]
    core = handle.expander.expand("(a castle:1.2) <lora:x:1>", seed=5)
    assert core.text == expanded  # the node is thin wiring over the core
    assert prompt["7"]["inputs"]["expanded_text"] == expanded
    assert pnginfo["workflow"]["nodes"][0]["properties"]["expanded_text"] == expanded


class FakeClip:
    def __init__(self, keys=("l",)):
        self.encoded = []
        self.keys = keys  # ComfyUI's tokenizer names: "l" for SD1.5, "g" and "l" for SDXL, "qwen25_7b" ...

    def tokenize(self, text, return_word_ids=False):
        words = text.replace(",", " , ").split()
        chunk = [(49406, 1.0, 0)] + [(1000 + i, 1.0, i + 1) for i in range(len(words))] + [(49407, 1.0, 0)] * 3
        return {key: [chunk if return_word_ids else [t[:2] for t in chunk]] for key in self.keys}

    def encode_from_tokens_scheduled(self, tokens):
        self.encoded.append(tokens)
        return [["cond", {"pooled_output": "pooled"}]]


def test_an_encoder_without_a_clip_tokenizer_gets_the_plain_expansion(pack, mm):
    """Qwen-Image's encoder counts its chat template too (59 'tokens' for 14 words in ComfyUI 0.8.0), and T5 has no
    75-token chunks: Expand Prompt + Encode then writes what Expand Prompt writes."""
    from importlib import import_module
    nodes = import_module(pack.__name__ + ".nodes.expand_nodes")
    assert nodes.clip_counter(FakeClip(keys=("qwen25_7b",))) is None
    assert nodes.clip_counter(FakeClip(keys=("t5xxl",))) is None
    assert nodes.clip_counter(FakeClip(keys=("t5xxl", "l")))("a red fox") == 3  # Flux: its CLIP-L counts
    handle = node(pack, "LoadPromptExpander").load("tiny", "auto", "auto")[0]
    encoded = node(pack, "ExpandPromptEncode").expand_encode(handle, "a red fox", 3, 0.8, 0, True,
                                                            FakeClip(keys=("qwen25_7b",)))["result"][1]
    assert encoded == node(pack, "ExpandPrompt").expand(handle, "a red fox", 3, 0.8, 0, True)["result"][0]


def test_expand_encode_counts_with_the_clip(pack, mm):
    handle = node(pack, "LoadPromptExpander").load("tiny", "auto", "auto")[0]
    clip = FakeClip()
    out = node(pack, "ExpandPromptEncode").expand_encode(handle, "a red fox", 3, 0.8, 12, True, clip)
    cond, expanded = out["result"]
    assert cond == [["cond", {"pooled_output": "pooled"}]] and clip.encoded
    added = expanded[len("a red fox, "):]
    assert len((", " + added).replace(",", " , ").split()) <= 12


def test_variations_equal_singles_and_report_progress(pack, mm):
    import comfy.utils
    comfy.utils.updates.clear()
    handle = node(pack, "LoadPromptExpander").load("tiny", "auto", "auto")[0]
    out = node(pack, "ExpandPromptVariations").variations(handle, "a robot", 10, 0.9, 0, True, 4)
    texts, added = out["result"]
    singles = [node(pack, "ExpandPrompt").expand(handle, "a robot", 10 + i, 0.9, 0, True)["result"][0]
               for i in range(4)]
    assert texts == singles and len(added) == 4
    assert comfy.utils.updates[-1] == (100, 100) and len(comfy.utils.updates) > 2


def test_styles_stack_without_reloading_and_cache_is_stable(pack, mm, monkeypatch):
    loader = node(pack, "LoadPromptExpander")
    a = loader.load("tiny", "auto", "auto")[0]
    sig = pack.NODE_CLASS_MAPPINGS["LoadPromptExpander"].IS_CHANGED("tiny", "auto", "auto")
    assert sig and sig == pack.NODE_CLASS_MAPPINGS["LoadPromptExpander"].IS_CHANGED("tiny", "auto", "auto")
    assert not (isinstance(sig, float) and math.isnan(sig))
    import importlib
    resident = importlib.import_module("prompt-expander-main.prompt_expander.expansion.resident")
    monkeypatch.setattr(resident, "load_model", lambda *a, **k: pytest.fail("reloaded from disk"))
    b = loader.load("tiny", "auto", "auto")[0]
    assert b.expander is a.expander
    styled = node(pack, "ApplyExpanderStyle").apply(a, "tinystyle", 0.8)[0]
    twice = node(pack, "ApplyExpanderStyle").apply(styled, "tinystyle", 0.2)[0]
    assert styled.expander is a.expander and twice.styles[-1][1] == 0.2 and len(twice.styles) == 2
    run = node(pack, "ExpandPrompt").expand
    plain = run(a, "a castle", 3, 0.8, 0, True)["result"][0]
    assert run(styled, "a castle", 3, 0.8, 0, True)["result"][0] != plain
    assert run(a, "a castle", 3, 0.8, 0, True)["result"][0] == plain  # same inputs, same output


def test_a_folder_the_user_linked_in_loads(pack, mm):
    handle = node(pack, "LoadPromptExpander").load("linked", "auto", "auto")[0]
    assert node(pack, "ExpandPrompt").expand(handle, "a castle", 1, 0.8, 0, True)["result"][0].startswith("a castle")


@pytest.mark.parametrize("name", ["nope", "../tiny", "/etc", "loras/photo", "..", "tiny/../../x"])
def test_bad_model_names_never_leave_the_folders(pack, name):
    from importlib import import_module
    errors = import_module("prompt-expander-main.prompt_expander.errors")
    with pytest.raises(errors.ExpanderError, match="no model named"):
        node(pack, "LoadPromptExpander").load(name, "auto", "auto")


def test_bad_inputs_are_node_errors(pack, mm, tmp_path):
    from importlib import import_module
    errors = import_module("prompt-expander-main.prompt_expander.errors")
    import folder_paths
    root = Path(folder_paths.get_folder_paths("prompt_expander")[0])
    broken = root / "broken"
    shutil.copytree(root / "tiny", broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    try:
        with pytest.raises(errors.ModelLoadError, match="corrupt"):
            node(pack, "LoadPromptExpander").load("broken", "auto", "auto")
    finally:
        shutil.rmtree(broken)
    other = node(pack, "LoadPromptExpander").load("other", "auto", "auto")[0]
    with pytest.raises(errors.AdapterError, match="tiny-gpt2"):
        node(pack, "ApplyExpanderStyle").apply(other, "tinystyle", 1.0)
    handle = node(pack, "LoadPromptExpander").load("tiny", "auto", "auto")[0]
    with pytest.raises(errors.InputError, match="empty"):
        node(pack, "ExpandPrompt").expand(handle, "  ", 1, 0.8, 0, True)
    huge = node(pack, "ExpandPrompt").expand(handle, "castle " * 14000, 1, 0.8, 0, True)["result"][0]
    assert huge.startswith("castle castle")
    with pytest.raises(errors.InputError, match="the most is 100,000"):  # the documented cap
        node(pack, "ExpandPrompt").expand(handle, "castle " * 20000, 1, 0.8, 0, True)
    mm.interrupt_after = 3
    with pytest.raises(mm.InterruptProcessingException):
        node(pack, "ExpandPrompt").expand(handle, "a castle", 1, 0.8, 0, True)


def test_example_workflows_use_only_existing_nodes_and_inputs(pack):
    files = sorted((ROOT / "example_workflows").glob("*.json"))
    assert len(files) >= 3
    for f in files:
        wf = json.loads(f.read_text())
        by_id = {n["id"]: n for n in wf["nodes"]}
        for n in wf["nodes"]:
            if n["type"] in pack.NODE_CLASS_MAPPINGS:
                types = pack.NODE_CLASS_MAPPINGS[n["type"]].INPUT_TYPES()
                spec = {**types["required"], **types.get("optional", {})}
                widgets = [k for k, v in spec.items() if isinstance(v[0], list) or v[0] in ("STRING", "INT", "FLOAT", "BOOLEAN")]
                controls = sum(1 for k in widgets if spec[k][1].get("control_after_generate"))
                links = [i["name"] for i in n["inputs"] if "widget" not in i]
                assert set(links) <= set(spec) - set(widgets), (f.name, n["type"])
                assert len(n["widgets_values"]) == len(widgets) + controls, (f.name, n["type"])
                for name, value in zip([k for k in widgets], [v for v in n["widgets_values"] if v not in ("fixed",)]):
                    if isinstance(spec[name][0], list) and name != "model":
                        assert value in spec[name][0] or name == "style", (f.name, name, value)
            else:
                assert n["type"] in CORE_NODES, (f.name, n["type"])
                assert {i["name"] for i in n["inputs"]} <= set(CORE_NODES[n["type"]]["inputs"])
                assert len(n["widgets_values"]) == CORE_NODES[n["type"]]["widgets"] + (n["type"] == "KSampler")
        for link_id, src, src_slot, dst, dst_slot, typ in wf["links"]:
            assert src in by_id and dst in by_id
            assert by_id[src]["outputs"][src_slot]["type"] == typ
            assert by_id[dst]["inputs"][dst_slot]["link"] == link_id


def test_entry_imported_as_a_plain_module_registers_nothing():
    """pytest does this when the checkout's folder name is not an identifier, e.g. a clone named 'prompt-expander'."""
    spec = importlib.util.spec_from_file_location("__init__", ROOT / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS == {} and module.WEB_DIRECTORY == "./web/js"


@pytest.mark.parametrize("inputs", [{"contrast": 0.8}, {"candidates": 3}, {"candidates": 3, "pick_words": 2},
                                    {"candidates": 3, "pick_words": 2, "contrast_words": 2}, {"contrast_words": 0}])
def test_the_input_reaches_the_core_in_every_expand_node(pack, mm, inputs):
    handle = node(pack, "LoadPromptExpander").load("tiny", "cpu", "fp32")[0]
    core = [handle.expander.expand("a castle", seed=5 + i, **inputs).text for i in range(2)]
    assert node(pack, "ExpandPrompt").expand(handle, "a castle", 5, 0.8, 0, True, **inputs)["result"][0] == core[0]
    out = node(pack, "ExpandPromptVariations").variations(handle, "a castle", 5, 0.8, 0, True, 2, **inputs)
    assert out["result"][0] == core
    enc = node(pack, "ExpandPromptEncode").expand_encode(handle, "a castle", 5, 0.8, 0, True, FakeClip(), **inputs)
    assert enc["result"][1] == handle.expander.expand("a castle", seed=5, count=pack_counter(pack), **inputs).text


def test_the_contrast_and_candidates_widget_defaults(pack):
    optional = pack.NODE_CLASS_MAPPINGS["ExpandPrompt"].INPUT_TYPES()["optional"]
    spec = optional["contrast"]
    # On by default at the shipped default model's own setting; a saved workflow keeps the value it was saved with.
    assert spec[1]["default"] == 1.0 and spec[1]["max"] == 2.0
    # The last widgets: a workflow saved before they existed loads with its values in place.
    assert list(optional)[-3:] == ["candidates", "pick_words", "contrast_words"]
    # -1 is the model's own setting, so an older workflow's text does not change with a model that has none.
    for name, most in (("candidates", 16), ("pick_words", 40), ("contrast_words", 75)):
        assert optional[name][1]["default"] == -1 == optional[name][1]["min"] and optional[name][1]["max"] == most


def test_contrast_words_minus_one_is_the_models_own_and_a_value_overrides_it(pack, mm, tiny_model_dir):
    import json
    import os
    folder = Path(os.environ["FAKE_COMFY_MODELS"]) / "prompt_expander" / "tiny-contrast-words"
    if not folder.exists():
        shutil.copytree(tiny_model_dir, folder)
        card = folder / "prompt_expander.json"
        meta = json.loads(card.read_text()) if card.is_file() else {}
        card.write_text(json.dumps({**meta, "contrast": 1.0, "contrast_words": 2}))
    handle = node(pack, "LoadPromptExpander").load("tiny-contrast-words", "cpu", "fp32")[0]
    expand = node(pack, "ExpandPrompt").expand
    own = expand(handle, "a castle", 5, 0.8, 0, True, contrast=1.0)["result"][0]
    assert own == expand(handle, "a castle", 5, 0.8, 0, True, contrast=1.0, contrast_words=-1)["result"][0]
    assert own == handle.expander.expand("a castle", seed=5, contrast=1.0, contrast_words=2).text
    every = expand(handle, "a castle", 5, 0.8, 0, True, contrast=1.0, contrast_words=0)["result"][0]
    assert every == handle.expander.expand("a castle", seed=5, contrast=1.0, contrast_words=0).text


def pack_counter(pack):
    from importlib import import_module
    nodes = import_module(pack.__name__ + ".nodes.expand_nodes")
    return nodes.clip_counter(FakeClip())


def test_loads_under_the_module_name_current_comfyui_gives_a_pack(pack, tmp_path):
    """ComfyUI now names a pack's module after its whole path, dots replaced: '/a/b.c/prompt-expander' becomes
    '/a/b_x_c/prompt-expander', and the relative imports must resolve under that name too."""
    folder = tmp_path / "ComfyUI.v1" / "custom_nodes" / "prompt-expander"
    folder.parent.mkdir(parents=True)
    folder.symlink_to(ROOT, target_is_directory=True)
    name = str(folder).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, str(folder / "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        assert sorted(module.NODE_CLASS_MAPPINGS) == sorted(pack.NODE_CLASS_MAPPINGS)
        handle = module.NODE_CLASS_MAPPINGS["LoadPromptExpander"]().load("tiny", "cpu", "fp32")[0]
        text = module.NODE_CLASS_MAPPINGS["ExpandPrompt"]().expand(handle, "a castle", 5, 0.8, 0, True)["result"][0]
        assert text == handle.expander.expand("a castle", seed=5).text
        assert name + ".prompt_expander.expansion.resident" in sys.modules
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
