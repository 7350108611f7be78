"""The on-topic pick: of several sampled additions, keep the one whose words are closest to the input's."""
from __future__ import annotations

import torch

from .sampling import SEED_SPACE

# Candidate j of seed s is sampled with seed s + j * CANDIDATE_STRIDE: candidate 0 is the plain expansion of s,
# and an odd stride this large never lands on the seeds s + 1, s + 2, ... of the next variations.
CANDIDATE_STRIDE = 0x9E3779B97F4A7C15


def candidate_seeds(seed: int, candidates: int) -> list[int]:
    return [(seed + j * CANDIDATE_STRIDE) % SEED_SPACE for j in range(candidates)]


class Picker:
    """Keeps the candidate whose unit vector is closest to the input's; subclasses say how a text's vector is made."""

    # Short additions score high (fewer style words dilute their mean): at K = 8 the pick took the 5th
    # percentile of ImageNet additions from 18 words to 9. One this short is kept only when all are.
    MIN_WORDS = 15

    def __init__(self, min_words: int = MIN_WORDS):
        self.min_words = min_words

    def vectors(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The unit vectors of many texts, [n, width], and which texts could be scored (the others' are zero)."""
        raise NotImplementedError

    def pick(self, text: str, candidates: list[str]) -> int:
        """The index of the candidate closest to `text` among those of at least min_words words (among all if
        none is that long); the first among equals, and 0 when none can be scored."""
        vectors, scored = self.vectors([text, *candidates])
        if not scored[0]:
            return 0
        long_enough = any(len(c.split()) >= self.min_words for c in candidates)
        best, best_score = 0, -float("inf")
        for j, candidate in enumerate(candidates):
            if not scored[j + 1] or (long_enough and len(candidate.split()) < self.min_words):
                continue
            score = float(vectors[j + 1] @ vectors[0])
            if score > best_score:
                best, best_score = j, score
        return best


class OnTopicPicker(Picker):
    """Scores a text by cos(mean token embedding of the text, mean token embedding of the input), both taken
    from the expander's own input embeddings less their vocabulary mean (the direction every token shares).

    Measured with a separate judge (all-MiniLM-L6-v2, never loaded here): keeping the best of 8 by this score
    raised the specificity of the default's additions from 0.032 to 0.059 on PartiPrompts and from 0.015 to 0.026
    on ImageNet classes (docs/specificity.md). A deeper layer's states scored no better than these embeddings,
    and these cost no forward pass. A model folder with word vectors uses WordVectorPicker instead."""

    def __init__(self, tokenizer, embeddings: torch.Tensor, min_words: int = Picker.MIN_WORDS):
        super().__init__(min_words)
        self.tokenizer = tokenizer
        self.weights = embeddings.detach().float()  # no copy for an fp32 model
        self.centre = self.weights.mean(0)

    def _ids(self, text: str) -> list[int]:
        # With a leading space, as the words stand inside a prompt.
        ids = self.tokenizer.encode(" " + text.strip(), add_special_tokens=False) if text.strip() else []
        return [i for i in ids if 0 <= i < len(self.weights)]

    def vectors(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The unit vectors of many texts at once (a training file's worth, or an input and its candidates):
        [n, width], and which texts had tokens (the others' rows are zero)."""
        ids = [self._ids(t) for t in texts]
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=self.weights.device)
        lengths = torch.tensor([len(row) for row in ids], dtype=torch.long, device=self.weights.device)
        offsets = torch.cumsum(lengths, 0) - lengths
        means = torch.nn.functional.embedding_bag(flat, self.weights, offsets, mode="mean")
        ok = lengths > 0
        vectors = torch.nn.functional.normalize(means - self.centre, dim=-1)
        return vectors.masked_fill(~ok[:, None], 0.0), ok


class WordVectorPicker(Picker):
    """Scores a text by the cosine between its word vectors' weighted mean and the input's (word_vectors.py:
    learnt from the model's own training prompts, so which words a prompt writes near the subject's).

    With the shipped default, picking the first 12 words of 4 candidates this way gave 0.049 specificity on
    PartiPrompts against 0.044 with token embeddings, and of 8 candidates 0.060 against 0.053
    (docs/specificity.md, twentieth session). The judge is never used."""

    def __init__(self, word_vectors, min_words: int = Picker.MIN_WORDS):
        super().__init__(min_words)
        self.word_vectors = word_vectors

    def vectors(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.word_vectors.text_vectors(texts)
