"""Topic-tagged training: the subject of a prompt, the tagged format, and a tagged model end to end."""
import json

import pytest

from prompt_expander.topics import TOPIC_TOKEN, tagged, topic_of
from test_training import BASE_FLAGS, cli, data_dir  # noqa: F401 (a fixture)


@pytest.mark.parametrize("prompt,topic", [
    ("a lemon, sliced, on a marble counter, 8k", "a lemon"),
    ("highly detailed oil painting of a castle on a hill, by greg rutkowski", "a castle on a hill"),
    ("a photo of a red fox in the snow", "a red fox in the snow"),
    ("portrait of an old man with a beard, studio lighting", "an old man with a beard"),
    ("cyberpunk city street at night with neon signs and rain, blade runner", "cyberpunk city street at night with"),
    ("a painting of", "a painting of"),  # framing and nothing else: kept as it is
])
def test_the_subject_is_the_first_phrase_without_framing(prompt, topic):
    assert topic_of(prompt) == topic


def test_the_tagged_format_names_the_subject_then_keeps_the_prompt_whole():
    assert tagged("a photo of a cat, bokeh") == f"a cat{TOPIC_TOKEN}a photo of a cat, bokeh"


@pytest.fixture(scope="module")
def tagged_model(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tagged") / "model"
    r = cli("train-base", data_dir, "--out", out, "--steps", "40", "--save-every", "40", "--eval-every", "20",
            "--topic-tags", *BASE_FLAGS)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_a_tagged_model_trains_records_its_format_and_expands(tagged_model):
    from prompt_expander import load_expander
    assert json.loads((tagged_model / "prompt_expander.json").read_text())["topic_tags"] is True
    assert "Topic-tagged" in (tagged_model / "README.md").read_text()
    exp = load_expander(str(tagged_model))
    topic_id = exp.tokenizer.convert_tokens_to_ids(TOPIC_TOKEN)
    assert exp.tokenizer.encode(f"a cat{TOPIC_TOKEN}a cat", add_special_tokens=False).count(topic_id) == 1
    context = exp._context_ids("a castle", 20)
    assert context.count(topic_id) == 1 and exp._unconditional_ids()[1] == topic_id
    for seed in range(4):
        r = exp.expand("a castle", seed=seed)
        assert r.text.startswith("a castle") and "topic" not in r.text and "<" not in r.text
    assert exp.expand("a castle", seed=1, contrast=0.5).text.startswith("a castle")


def test_a_tagged_models_bits_per_byte_count_only_the_prompts_bytes(tagged_model, data_dir):
    from prompt_expander import load_expander
    from prompt_expander.evaluation.scoring import encode_for_scoring
    exp = load_expander(str(tagged_model))
    ids, nbytes = encode_for_scoring(exp.tokenizer, "a photo of a cat, bokeh", True, 64, topic_tags=True)
    assert nbytes == len("a photo of a cat, bokeh") + 1  # + the EOS, as for an untagged model
    assert ids.count(exp.tokenizer.convert_tokens_to_ids(TOPIC_TOKEN)) == 1
    r = cli("evaluate", data_dir / "val.txt", "--model", tagged_model)
    assert r.returncode == 0 and "bits/byte" in r.stdout, r.stderr[-2000:]


def test_resuming_with_a_different_format_is_refused(tagged_model, data_dir, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(tagged_model, run)
    r = cli("train-base", data_dir, "--out", run, "--steps", "41", "--resume", *BASE_FLAGS)  # without --topic-tags
    assert r.returncode == 1 and "other data or settings" in r.stderr


def test_a_lora_on_a_tagged_base_trains_in_the_same_format(tagged_model, data_dir, tmp_path):
    out = tmp_path / "castle"
    r = cli("train-lora", data_dir, "--base", tagged_model, "--out", out, "--select", "castle", "--r", "4",
            "--steps", "10", "--batch-size", "8", "--eval-every", "10", "--save-every", "10", "--precision", "fp32")
    assert r.returncode == 0, r.stderr[-2000:]
    from prompt_expander.train.dataset import TokenizedPrompts
    from prompt_expander import load_expander
    data = TokenizedPrompts.load(out / "cache" / "train.npz")
    topic_id = load_expander(str(tagged_model)).tokenizer.convert_tokens_to_ids(TOPIC_TOKEN)
    assert all(topic_id in data.get(i).tolist() for i in range(min(len(data), 20)))
