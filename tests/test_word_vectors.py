"""Word vectors from a prompt file: what they learn, their file, the `word-vectors` command and the pick."""
import json
import random
import shutil

import pytest
import torch

from prompt_expander.cli import main
from prompt_expander.errors import ModelLoadError
from prompt_expander.expansion.on_topic import OnTopicPicker, WordVectorPicker, candidate_seeds
from prompt_expander.expansion.resident import load_expander
from prompt_expander.word_vectors import WORD_VECTORS_FILE, WordVectors, build_word_vectors, words_of

TOPICS = {"lemon": ["sliced", "citrus", "juice", "zest"], "castle": ["tower", "moat", "medieval", "ramparts"],
          "cat": ["whiskers", "fur", "kitten", "paws"]}
STYLES = ["highly detailed", "artstation", "octane render", "sharp focus", "by greg rutkowski", "8k"]


def themed_corpus(path, n=900, seed=0):
    """Prompts whose middle words belong to their subject and whose style words to none."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        subject = rng.choice(sorted(TOPICS))
        lines.append(", ".join([f"a {subject}", *rng.sample(TOPICS[subject], 2), *rng.sample(STYLES, 2)]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def vectors(tmp_path_factory):
    return build_word_vectors(themed_corpus(tmp_path_factory.mktemp("wv") / "train.txt"), dimensions=8)


def test_words_are_lower_cased_letters_with_inner_apostrophes():
    assert words_of("A Lemon, 8k, O'Keeffe's -- Café!") == ["a", "lemon", "o'keeffe's", "café"]


def test_a_subject_is_closest_to_the_words_written_beside_it(vectors):
    picker = WordVectorPicker(vectors, min_words=0)
    candidates = ["tower, moat, highly detailed", "sliced, citrus, highly detailed", "whiskers, fur, artstation"]
    assert picker.pick("a lemon", candidates) == 1
    assert picker.pick("a castle", candidates) == 0
    assert picker.pick("a cat", candidates) == 2
    # style words every subject shares do not outweigh one subject word
    assert picker.pick("a lemon", ["octane render, 8k, sharp focus, artstation", "zest, 8k"]) == 1


def test_unknown_text_scores_nothing_and_the_plain_expansion_is_kept(vectors):
    picker = WordVectorPicker(vectors, min_words=0)
    assert picker.pick("zzz qqq", ["sliced citrus", "tower"]) == 0
    assert picker.pick("a lemon", ["", "qqq", "citrus"]) == 2
    out, ok = vectors.text_vectors(["", "citrus"])
    assert ok.tolist() == [False, True] and out[0].abs().sum() == 0 and abs(out[1].norm() - 1) < 1e-5


def test_the_same_corpus_gives_the_same_vectors(tmp_path, vectors):
    again = build_word_vectors(themed_corpus(tmp_path / "train.txt"), dimensions=8)
    assert again.words == vectors.words and torch.equal(again.vectors, vectors.vectors)


def test_too_little_text_gives_no_vectors(tmp_path):
    (tmp_path / "t.txt").write_text("a lemon\n", encoding="utf-8")
    assert build_word_vectors(tmp_path / "t.txt") is None


def test_saved_vectors_load_as_they_were_and_leave_no_temporary_file(tmp_path, vectors):
    path = tmp_path / WORD_VECTORS_FILE
    vectors.save(path, window=5)
    loaded = WordVectors.load(path)
    assert loaded.words == vectors.words
    assert torch.allclose(loaded.vectors, vectors.vectors, atol=1e-3)  # stored in fp16
    assert torch.equal(loaded.weights, vectors.weights)
    assert [p.name for p in tmp_path.iterdir()] == [WORD_VECTORS_FILE]
    (tmp_path / "plain.txt").write_text("")
    assert path.stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777  # readable as any file


@pytest.mark.parametrize("content", [b"", b"not a safetensors file", None])
def test_a_broken_or_foreign_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / WORD_VECTORS_FILE
    if content is None:  # a valid safetensors file that is not ours
        from safetensors.torch import save_file
        save_file({"x": torch.zeros(2)}, str(path))
    else:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=WORD_VECTORS_FILE):
        WordVectors.load(path)


@pytest.fixture
def model_with_vectors(tiny_model_dir, tmp_path):
    folder = tmp_path / "with-vectors"
    shutil.copytree(tiny_model_dir, folder)
    assert main(["word-vectors", str(themed_corpus(tmp_path / "train.txt")), "--model", str(folder),
                 "--dimensions", "8"]) == 0
    return folder


def test_the_command_names_the_vectors_in_the_card_and_keeps_the_rest(model_with_vectors, tiny_model_dir):
    card = json.loads((model_with_vectors / "prompt_expander.json").read_text())
    before = json.loads((tiny_model_dir / "prompt_expander.json").read_text())
    assert card == {**before, "word_vectors": WORD_VECTORS_FILE}


def test_an_expander_with_word_vectors_picks_by_them(model_with_vectors):
    expander = load_expander(str(model_with_vectors))
    assert isinstance(expander._picker(), WordVectorPicker)
    text, seed, k = "a castle on a hill", 3, 4
    plain = [expander.expand(text, seed=s).added for s in candidate_seeds(seed, k)]
    chooser = WordVectorPicker(expander.word_vectors())
    assert expander.expand(text, seed=seed, candidates=k).added == plain[chooser.pick(text, plain)]


def test_an_expander_without_them_picks_by_token_embeddings(expander):
    assert expander.word_vectors() is None and isinstance(expander._picker(), OnTopicPicker)


def test_a_damaged_vectors_file_fails_the_pick_clearly_and_leaves_plain_expansion_working(model_with_vectors):
    (model_with_vectors / WORD_VECTORS_FILE).write_bytes(b"damaged")
    expander = load_expander(str(model_with_vectors))
    assert expander.expand("a castle", seed=1).text.startswith("a castle")
    with pytest.raises(ModelLoadError, match="cannot read word vectors"):
        expander.expand("a castle", seed=1, candidates=2)


def test_the_command_refuses_bad_input_clearly(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "few.txt").write_text("a lemon\n", encoding="utf-8")
    assert main(["word-vectors", str(tmp_path / "few.txt"), "--model", str(tmp_path)]) == 1
    assert "too little text" in capsys.readouterr().err
    assert main(["word-vectors", str(tmp_path / "missing.txt"), "--model", str(tmp_path)]) == 1
    assert "no such prompts file" in capsys.readouterr().err
    assert main(["word-vectors", str(tmp_path / "few.txt"), "--model", str(tmp_path / "nope")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert main(["word-vectors", str(tmp_path / "few.txt"), "--model", str(tmp_path), "--window", "0"]) == 1
    assert "--window must be at least 1" in capsys.readouterr().err
    broken = tmp_path / "broken-card"
    broken.mkdir()
    (broken / "prompt_expander.json").write_text("{not json")
    assert main(["word-vectors", str(themed_corpus(tmp_path / "train.txt")), "--model", str(broken),
                 "--dimensions", "4"]) == 1
    assert "prompt_expander.json: cannot read it" in capsys.readouterr().err
    assert [p.name for p in broken.iterdir()] == ["prompt_expander.json"]  # left as it was, nothing written
