"""Predicting from raw token lists: a collate function for your own DataLoader, and ``tag()``'s
prediction dicts.

``trainer.predict(model, DataLoader(sentences, batch_size=32, collate_fn=TokenCollate(model)))``
tags a list of token lists with a plain Lightning loop and returns, per batch, the dicts a
DataModule's prediction returns (``index``, ``tokens``, ``tags``, ``confidences``, ``spans``;
see :func:`~seqtag.prediction.inference.predict_batch`). A collate function is called with the
loader's items only, so :class:`TokenCollate` is built from the model: it encodes with the
model's vocabularies, as training did. ``SequenceTagger.tag(sentences, spans=True)`` returns
the same dicts, in input order, through :func:`predict_sentences`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor
from torch.utils.data import get_worker_info

from seqtag.data.batching import collate, encode_sentence
from seqtag.data.io.inputs import iter_token_lists
from seqtag.data.io.text_files import first_token_problem
from seqtag.data.sampling import world
from seqtag.data.streaming import inference_sampler
from seqtag.data.vocab import Vocabularies
from seqtag.errors import CheckpointError, ConfigError
from seqtag.prediction.inference import predict_batch

if TYPE_CHECKING:
    from seqtag.training.module import SequenceTagger

__all__ = ["TokenCollate", "predict_sentences", "predict_stream"]

_ONE_PROCESS = (
    "TokenCollate numbers the sentences in the order it receives them, which needs one "
    "process: {why}; or tag with TaggingDataModule(predict_path=sentences), which shares "
    "the work between processes"
)


class TokenCollate:
    """``collate_fn`` for a DataLoader of token lists: a batch the model predicts from.

    Args:
        model: the trained model (or its ``vocabularies``), whose vocabularies encode the
            tokens; a model is asked at each batch, so one trained after the loader was made
            is fine.

    Each item of the loader's dataset is one sentence, a list (or tuple) of token strings,
    checked by the rule of ``tag()`` and the file readers. The batch's ``index`` numbers the
    sentences from 0 in the order this object receives them: with a loader that keeps its
    order (no shuffling, ``num_workers=0``), each sentence's position in the list; make one
    per prediction pass (``collate_fn=TokenCollate(model)`` in the call), as the numbering
    goes on. Worker processes and several devices would each number their own share from 0,
    so they are refused (use ``TaggingDataModule(predict_path=sentences)`` there).
    """

    def __init__(self, model: SequenceTagger | Vocabularies) -> None:
        self.model = model
        self.seen = 0

    def vocabularies(self) -> Vocabularies:
        """The vocabularies to encode with: the model's now."""
        found = self.model if isinstance(self.model, Vocabularies) else self.model.vocabularies
        if not isinstance(found, Vocabularies):
            raise CheckpointError(
                "TokenCollate: the model has no vocabularies yet: train it (trainer.fit) or "
                "load a checkpoint (SequenceTagger.load_from_checkpoint)"
            )
        return found

    def __call__(self, sentences: Sequence[Sequence[str]]) -> dict[str, Any]:
        if get_worker_info() is not None:
            raise ConfigError(_ONE_PROCESS.format(why="use DataLoader(num_workers=0)"))
        if world()[0] > 1:
            raise ConfigError(_ONE_PROCESS.format(why="use one device"))
        vocabularies = self.vocabularies()
        encoded = []
        for offset, tokens in enumerate(sentences):
            index = self.seen + offset
            encoded.append(
                encode_sentence(vocabularies, index, _checked(index, tokens), keep_tokens=True)
            )
        self.seen += len(encoded)
        return collate(encoded)


def _checked(index: int, tokens: Any) -> list[str]:
    """One loader item as a token list, or a one-line error naming the sentence and token."""
    where = f"TokenCollate: sentence {index}"
    if isinstance(tokens, str | bytes) or not isinstance(tokens, Iterable):
        raise ConfigError(
            f"{where} is a {type(tokens).__name__}: each item of the loader's dataset is one "
            "sentence's token list, e.g. ['The', 'cat', 'sat', '.'] (split strings yourself)"
        )
    tokens = list(tokens)
    if not tokens:
        raise ConfigError(f"{where} has no tokens: leave empty sentences out of the loader")
    for number, token in enumerate(tokens, 1):
        if not isinstance(token, str):
            raise ConfigError(
                f"{where}, token {number} is a {type(token).__name__} ({token!r}); tokens "
                "must be strings"
            )
    found = first_token_problem(tokens)
    if found is not None:
        raise ConfigError(f"{where}, token {found[0]}, {found[1]}")
    return tokens


def predict_sentences(
    model: SequenceTagger,
    sentences: Sequence[Sequence[str]],
    batch_size: int,
    confidences: bool = True,
) -> list[dict[str, Any]]:
    """``trainer.predict``'s dict for each sentence (tags, confidences, spans), in input order.

    Sentences are batched by length as :func:`~seqtag.prediction.inference.tag_sentences`
    batches them; an empty sentence gets empty lists (and no spans). ``confidences=False``
    skips every probability (a CRF's forward-backward pass, its passes per span):
    ``confidences`` is ``None`` and the spans have no ``confidence``.
    """
    with_spans = bool(model.vocabularies.corpus_scheme)
    results: list[dict[str, Any]] = [
        {
            "index": i,
            "tokens": [],
            "tags": [],
            "confidences": [] if confidences else None,
            "spans": [] if with_spans else None,
            "uncertainty": None,
        }
        for i in range(len(sentences))
    ]
    encoded = [
        encode_sentence(model.vocabularies, i, tokens, keep_tokens=True)
        for i, tokens in enumerate(sentences)
        if len(tokens) > 0
    ]
    if not encoded:
        return results
    was_training = model.training
    model.eval()
    try:
        for positions in inference_sampler([len(s.words) for s in encoded], batch_size):
            batch = {
                key: value.to(model.device) if isinstance(value, Tensor) else value
                for key, value in collate([encoded[p] for p in positions]).items()
            }
            found = predict_batch(
                model, batch, confidences, spans=True, span_confidences=confidences
            )
            for sentence in found:
                results[sentence["index"]] = sentence
    finally:
        model.train(was_training)
    return results


def predict_stream(
    model: SequenceTagger,
    sentences: Iterable[Sequence[str]] | Iterable[str],
    batch_size: int,
    chunk_size: int,
    confidences: bool = True,
) -> Iterator[dict[str, Any]]:
    """:func:`predict_sentences` ``chunk_size`` sentences at a time, for inputs of any length;
    ``index`` counts over the whole input."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    token_lists = iter_token_lists(sentences)
    start = 0
    while block := list(itertools.islice(token_lists, chunk_size)):
        for sentence in predict_sentences(model, block, batch_size, confidences):
            yield {**sentence, "index": start + sentence["index"]}
        start += len(block)
