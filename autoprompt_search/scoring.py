"""Score prompts (template + verbalizer + calibration) on labelled examples with a frozen model.

The expensive part, the slot distribution of a template over the whole vocabulary, is computed
once per chunk of examples and kept in a :class:`SlotCache`; every verbalizer and calibration
choice after that is indexing. Examples are processed in chunks so memory stays bounded.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from tqdm import tqdm

from autoprompt_search.backends import Backend, SlotQuery
from autoprompt_search.cache import SlotCache, decode_log_probs, encode_log_probs
from autoprompt_search.calibration import CALIBRATION_METHODS, Calibration
from autoprompt_search.errors import UserError
from autoprompt_search.templates import RenderedPrompt, Template, TemplateRenderer
from autoprompt_search.verbalizers import Verbalizer, WordIds, combine_word_log_probs

CONTENT_FREE_INPUTS = ("N/A", "", "{mask_token}")
DEFAULT_CHUNK_SIZE = 256  # prompts per cache entry: bounds memory, and is part of what a file must replay
MAX_WORD_TOKENS = 8  # room kept at the slot so truncation never depends on the verbalizer
PROGRESS_DELAY_SECONDS = 2.0  # a step answered from the cache ends sooner and draws no bar


@dataclass
class PromptScore:
    """How one prompt did on a set of labelled examples."""

    accuracy: float
    macro_f1: float
    n: int
    mean_margin: float
    predictions: np.ndarray
    gold: np.ndarray
    log_scores: np.ndarray  # calibrated, [n, classes]
    margins: np.ndarray  # gold score minus best other score, per example
    calibration: Calibration = field(default_factory=Calibration)

    @property
    def probabilities(self) -> np.ndarray:
        shifted = self.log_scores - self.log_scores.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=1, keepdims=True)

    def summary(self) -> dict:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "n": self.n, "mean_margin": self.mean_margin}


class PromptScorer:
    """Scores prompts for one backend, sharing a slot-distribution cache."""

    def __init__(self, backend: Backend, cache: SlotCache | None = None, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.backend = backend
        self.cache = cache if cache is not None else SlotCache()
        self.chunk_size = chunk_size
        self.progress: Callable[[int], None] | None = None  # told how many prompts each finished chunk held

    @contextmanager
    def reporting(self, progress: Callable[[int], None]) -> Iterator[None]:
        """Within the block, ``progress(n)`` is called after each chunk of ``n`` prompts is scored."""
        previous, self.progress = self.progress, progress
        try:
            yield
        finally:
            self.progress = previous

    @contextmanager
    def progress_bar(self, total: int, desc: str) -> Iterator[tqdm]:
        """A bar of examples per second and time left, fed by every chunk scored within the block
        (:meth:`reporting`); drawn only once the step has taken :data:`PROGRESS_DELAY_SECONDS`."""
        with tqdm(total=total, desc=desc, unit="example", leave=False, delay=PROGRESS_DELAY_SECONDS) as bar, \
                self.reporting(bar.update):
            yield bar

    # -- rendering -----------------------------------------------------------------------
    def render(
        self, template: Template, texts: Sequence[Mapping[str, str]], trigger_ids: Sequence[int] | None = None
    ) -> list[RenderedPrompt]:
        template.check_for_model(self.backend.kind)
        renderer = TemplateRenderer(template, self.backend.tokenizer, trigger_ids=trigger_ids)
        return renderer.render(texts, self.backend.max_prompt_tokens(MAX_WORD_TOKENS))

    def word_ids(self, template: Template, verbalizer: Verbalizer, origin: str = "verbalizer") -> tuple[tuple[WordIds, ...], ...]:
        ids = verbalizer.token_ids(self.backend.tokenizer, leading_space=template.whitespace_before_slot(), origin=origin)
        for label, words in zip(verbalizer.labels, ids):
            for word in words:
                if len(word) > MAX_WORD_TOKENS:
                    raise UserError(
                        f"{origin}: a word of label {label!r} is {len(word)} tokens long; at most {MAX_WORD_TOKENS} are supported"
                    )
        return ids

    # -- log-probabilities -----------------------------------------------------------------
    def slot_log_probs(self, prompts: Sequence[RenderedPrompt], query: SlotQuery = SlotQuery()) -> np.ndarray:
        """The ``[n, vocab]`` float32 slot distribution of one chunk of prompts, from the cache or one
        batched pass, as the cache stores it (within 0.0005 of the model's; the same either way)."""
        return decode_log_probs(self.templates_slot_codes([prompts], query)[0])

    def templates_slot_codes(self, chunks: Sequence[Sequence[RenderedPrompt]], query: SlotQuery = SlotQuery()) -> list[np.ndarray]:
        """The cache's codes (:func:`~autoprompt_search.cache.encode_log_probs`) of one chunk of examples'
        slot distribution under several templates; the ones the cache lacks are computed together
        (:meth:`Backend.templates_next_token_log_probs`). A fresh pass is read through its codes too,
        so that a figure never depends on what the cache held."""
        query = self.backend.normalize(query)
        keys = [SlotCache.key(self.backend.fingerprint, query, chunk) for chunk in chunks]
        found = [self.cache.get(key) for key in keys]
        missing = [t for t, value in enumerate(found) if value is None]
        if missing:
            computed = self.backend.templates_next_token_log_probs([chunks[t] for t in missing], query)
            for t, values in zip(missing, computed):
                if torch.isnan(values).any():
                    raise UserError(f"model {self.backend.path or ''}: its slot distribution holds NaN (broken or overflowing "
                                    "weights); nothing can be scored with it")
                found[t] = encode_log_probs(values.numpy())
                self.cache.put(keys[t], found[t])
        return found

    def cached(self, prompts: Sequence[RenderedPrompt], query: SlotQuery = SlotQuery()) -> bool:
        """Whether every chunk's slot distribution is already in the cache (reading them costs no pass)."""
        query = self.backend.normalize(query)
        return all(self.cache.get(SlotCache.key(self.backend.fingerprint, query, chunk)) is not None for _, chunk in self.chunks(prompts))

    def chunks(self, prompts: Sequence[RenderedPrompt]) -> Iterator[tuple[int, Sequence[RenderedPrompt]]]:
        """The fixed chunks (start, prompts) that are the cache's unit; everyone reads through them."""
        for start in range(0, len(prompts), self.chunk_size):
            yield start, prompts[start : start + self.chunk_size]

    def word_log_probs(self, prompts: Sequence[RenderedPrompt], words: Sequence[WordIds]) -> torch.Tensor:
        """``[n, len(words)]`` log-probability of each whole word at the slot (chain rule over its tokens)."""
        return self.templates_word_log_probs([prompts], [words])[0]

    def templates_word_log_probs(self, prompt_sets: Sequence[Sequence[RenderedPrompt]],
                                 word_sets: Sequence[Sequence[WordIds]]) -> list[torch.Tensor]:
        """:meth:`word_log_probs` of several templates on the same examples (``prompt_sets[t][i]``:
        template ``t`` on example ``i``, with the words ``word_sets[t]``), chunk by chunk: a chunk's
        distributions of all templates for one query are computed together."""
        results = [torch.zeros((len(prompts), len(words)), dtype=torch.float64) for prompts, words in zip(prompt_sets, word_sets)]
        by_query: dict[SlotQuery, list[tuple[int, torch.Tensor, np.ndarray]]] = {}
        for t, words in enumerate(word_sets):  # the same for every chunk
            for query, columns, tokens in word_queries(self.backend, words):
                by_query.setdefault(query, []).append((t, columns, tokens))
        queries = sorted(by_query.items(), key=lambda item: (len(item[0].prefix), item[0].prefix))  # each word's tokens add up in order
        for start, first in self.chunks(prompt_sets[0] if prompt_sets else []):
            end = start + len(first)
            for query, users in queries:
                chunks = [prompt_sets[t][start:end] for t, _, _ in users]
                for (t, columns, tokens), codes in zip(users, self.templates_slot_codes(chunks, query)):
                    values = torch.from_numpy(decode_log_probs(codes[:, tokens]).astype(np.float64))
                    results[t][start:end].index_add_(1, columns, values)
            if self.progress is not None:
                self.progress(len(first))
        return results

    def class_scores(self, prompts: Sequence[RenderedPrompt], word_ids: tuple[tuple[WordIds, ...], ...]) -> torch.Tensor:
        """Raw class log-scores ``[n, classes]``: log of the mean probability of each label's words."""
        return self.variant_class_scores(prompts, [word_ids])[0]

    def variant_class_scores(
        self, prompts: Sequence[RenderedPrompt], word_id_sets: Sequence[tuple[tuple[WordIds, ...], ...]]
    ) -> list[torch.Tensor]:
        """The raw class log-scores of several verbalizers on the same prompts, read in one pass over
        the chunks: no verbalizer has to recompute a distribution that the cache evicted meanwhile."""
        return self.templates_variant_class_scores([prompts], [word_id_sets])[0]

    def templates_variant_class_scores(self, prompt_sets: Sequence[Sequence[RenderedPrompt]],
                                       word_id_set_lists: Sequence[Sequence[tuple[tuple[WordIds, ...], ...]]]) -> list[list[torch.Tensor]]:
        """:meth:`variant_class_scores` of several templates on the same examples, their distributions
        computed together (:meth:`templates_word_log_probs`)."""
        words = [distinct_words(word_id_sets) for word_id_sets in word_id_set_lists]
        log_probs = self.templates_word_log_probs(prompt_sets, words)
        return [class_scores_of_words(*args) for args in zip(log_probs, words, word_id_set_lists)]

    # -- calibration and scoring --------------------------------------------------------------
    def prepare(
        self, template: Template, texts: Sequence[Mapping[str, str]], trigger_ids: Sequence[int] | None = None
    ) -> "PreparedPrompts":
        """Render a template on texts once, to score any number of verbalizers on it."""
        return PreparedPrompts(template, tuple(trigger_ids or ()), self.render(template, texts, trigger_ids))

    def content_free_texts(self, template: Template) -> list[dict[str, str]]:
        """The content-free inputs (``N/A``, the empty text, the mask token), in every field the template uses."""
        mask_text = self.backend.tokenizer.mask_token or ""
        values = dict.fromkeys(value.format(mask_token=mask_text) for value in CONTENT_FREE_INPUTS)
        return [{name: value for name in template.fields_used} for value in values]

    def fit_calibration(
        self,
        method: str,
        prepared: "PreparedPrompts",
        word_ids: tuple[tuple[WordIds, ...], ...],
    ) -> Calibration:
        """``contextual``: content-free inputs; ``prior``: mean class scores of the prompts
        themselves (no labels are used; a search fits it on its unlabelled texts instead)."""
        if method == "none":
            return Calibration()
        if method == "contextual":
            texts = self.content_free_texts(prepared.template)
            raw = self.class_scores(self.render(prepared.template, texts, prepared.trigger_ids or None), word_ids)
            content_free = torch.softmax(raw, dim=1).mean(dim=0)
            return Calibration("contextual", tuple(float(v) for v in torch.log(content_free)))
        if method == "prior":
            return Calibration.prior_from(self.class_scores(prepared.prompts, word_ids))
        raise UserError(f"unknown calibration {method!r}; choose one of {', '.join(CALIBRATION_METHODS)}")

    def score(
        self,
        prepared: "PreparedPrompts",
        verbalizer: Verbalizer,
        gold: Sequence[int],
        *,
        calibration: str | Calibration = "none",
    ) -> PromptScore:
        """Score one prompt on prepared examples with gold label indices (in the verbalizer's order)."""
        return self.score_variants(prepared, [(verbalizer, calibration)], gold)[0]

    def score_variants(
        self,
        prepared: "PreparedPrompts",
        variants: Sequence[tuple[Verbalizer, str | Calibration]],
        gold: Sequence[int],
    ) -> list[PromptScore]:
        """Score several (verbalizer, calibration) pairs on one template's prepared examples, with
        one pass of the model over them whatever the cache holds."""
        return self.score_templates([(prepared, variants)], gold)[0]

    def score_templates(
        self,
        items: Sequence[tuple["PreparedPrompts", Sequence[tuple[Verbalizer, str | Calibration]]]],
        gold: Sequence[int],
    ) -> list[list[PromptScore]]:
        """:meth:`score_variants` of several templates prepared on the same examples, in one pass
        over the examples that computes all the templates' distributions together."""
        word_id_sets = [[self.word_ids(prepared.template, verbalizer) for verbalizer, _ in variants] for prepared, variants in items]
        raws = self.templates_variant_class_scores([prepared.prompts for prepared, _ in items], word_id_sets)
        results = []
        for (prepared, variants), template_word_ids, template_raws in zip(items, word_id_sets, raws):
            scores = []
            for (_, calibration), word_ids, raw in zip(variants, template_word_ids, template_raws):
                if not isinstance(calibration, Calibration):
                    if calibration == "prior":  # the scores at hand: no second pass
                        calibration = Calibration.prior_from(raw)
                    else:
                        calibration = self.fit_calibration(calibration, prepared, word_ids)
                scores.append(evaluate_scores(calibration.apply(raw), gold, calibration))
            results.append(scores)
        return results


def distinct_words(word_id_sets: Sequence[tuple[tuple[WordIds, ...], ...]]) -> list[WordIds]:
    """Every word of the verbalizers once, in order of appearance: the columns of word log-probs."""
    return list(dict.fromkeys(word for word_ids in word_id_sets for label_words in word_ids for word in label_words))


def word_queries(backend: Backend, words: Sequence[WordIds]) -> list[tuple[SlotQuery, torch.Tensor, np.ndarray]]:
    """The slot distributions that score ``words`` (chain rule over each word's tokens), as
    ``(query, columns, tokens)``: the query's log-probability of ``tokens[i]`` adds to column ``columns[i]``.
    Shorter prefixes come first: each word's tokens add up in order, whatever other words are asked with it."""
    queries: dict[SlotQuery, list[tuple[int, int]]] = {}
    for column, word in enumerate(words):
        for position, token in enumerate(word):
            query = backend.normalize(SlotQuery(width=len(word), prefix=tuple(word[:position])))
            queries.setdefault(query, []).append((column, token))
    ordered = sorted(queries.items(), key=lambda item: (len(item[0].prefix), item[0].prefix))
    return [(query, torch.tensor([c for c, _ in targets]), np.array([t for _, t in targets])) for query, targets in ordered]


def class_scores_of_words(log_probs: torch.Tensor, words: Sequence[WordIds],
                          word_id_sets: Sequence[tuple[tuple[WordIds, ...], ...]]) -> list[torch.Tensor]:
    """Each verbalizer's raw class log-scores from the word log-probs ``[n, len(words)]``."""
    column = {word: index for index, word in enumerate(words)}
    scores = []
    for word_ids in word_id_sets:
        columns = [column[word] for label_words in word_ids for word in label_words]
        owner = [label for label, label_words in enumerate(word_ids) for _ in label_words]
        scores.append(combine_word_log_probs(log_probs[:, columns], owner, len(word_ids)))
    return scores


def trainable_class_scores(backend: Backend, prompts: Sequence[RenderedPrompt], word_ids: tuple[tuple[WordIds, ...], ...]) -> torch.Tensor:
    """Raw class log-scores ``[n, classes]`` of one batch with gradients: the same queries, chain rule
    and combination of a label's words as :meth:`PromptScorer.class_scores`, without cache or
    inference mode, for training on the prompt's own objective."""
    words = distinct_words([word_ids])
    log_probs = torch.zeros((len(prompts), len(words)), dtype=torch.float64, device=backend.device)
    for query, columns, tokens in word_queries(backend, words):
        logits = backend.forward_slot_logits(backend.assemble(prompts, query))
        values = torch.log_softmax(logits.float(), dim=-1)[:, torch.from_numpy(tokens).to(backend.device)]
        log_probs = log_probs.index_add(1, columns.to(backend.device), values.double())
    return class_scores_of_words(log_probs, words, [word_ids])[0]


@dataclass(frozen=True)
class PreparedPrompts:
    """A template rendered on a list of examples."""

    template: Template
    trigger_ids: tuple[int, ...]
    prompts: list[RenderedPrompt]

    def __len__(self) -> int:
        return len(self.prompts)


def evaluate_scores(log_scores: torch.Tensor, gold: Sequence[int], calibration: Calibration = Calibration()) -> PromptScore:
    """Accuracy, macro-F1 and margins of calibrated class scores against gold label indices."""
    scores = log_scores.double().numpy()
    gold_array = np.asarray(gold, dtype=np.int64)
    predictions = scores.argmax(axis=1)
    others = scores.copy()
    others[np.arange(len(scores)), gold_array] = -np.inf
    margins = scores[np.arange(len(scores)), gold_array] - others.max(axis=1)
    labels = list(range(scores.shape[1]))
    return PromptScore(
        accuracy=float(accuracy_score(gold_array, predictions)),
        macro_f1=float(f1_score(gold_array, predictions, average="macro", labels=labels, zero_division=0)),
        n=len(gold_array),
        mean_margin=float(margins.mean()) if len(margins) else 0.0,
        predictions=predictions,
        gold=gold_array,
        log_scores=scores,
        margins=margins,
        calibration=calibration,
    )
