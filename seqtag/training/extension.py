"""Fine-tuning on new data: a trained model grown to the vocabularies of more data.

A model reads text through its own vocabularies, so training a loaded model on a file with
tags it does not know would learn those tokens as some other tag, and its new words would all
be the unknown word. ``model.extended(dm.spec)`` (:meth:`~seqtag.SequenceTagger.extended`, made
of :func:`extended_vocabularies` and :func:`grow_network`) instead gives a model whose
vocabularies are the union of the model's and the data's, old ids first and unchanged, new
entries appended, and whose network keeps every old weight bit for bit:

- **New words** start from the data's pretrained vectors when the spec has an embedding matrix
  (a word the vector file lacks gets the random start, at the vectors' scale, that a model built
  from this data would give it); without vectors, from the row the model read the word with so
  far (a spelling the fallback lookup finds, or its shape's unknown entry), so nothing it tags
  changes before training. Their rare-word dropout follows their count in the new data.
- **New characters** start from the row of the unknown character, which the model read them as.
- **New tags** get output rows of zero weights and a bias so far below every score the old
  rows can reach (:func:`new_tag_bias`) that their probability is below ``exp(-20)`` on any
  input: the extended model tags as before (confidences within 1e-6 for up to hundreds of new
  tags) until it is trained. A CRF gets zero transitions to and from them, and its allowed
  transitions are recomputed from the tag scheme for the whole tag set (old pairs are
  unchanged: each depends on its two tags only).

The extension returns a new model rather than growing the model in place: the original stays
usable (to compare, or to extend again with other data), and nothing that holds its parameters
(an optimizer made from them) finds their shapes changed under it.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from seqtag.data.spec import DataSpec
from seqtag.data.vocab import Vocabularies, Vocabulary
from seqtag.errors import ConfigError
from seqtag.models.tagger import Tagger

log = logging.getLogger(__name__)

#: How far (in log-probability) a new tag starts below the old ones at least: exp(-20) is about
#: 2e-9, so up to about 500 new tags move no old confidence by 1e-6. Farther only slows the new
#: tags' learning: on 600 EWT sentences (NUM left out, then added; 19 steps an epoch) this
#: margin trailed a bias of 0 (which changes every prediction) by about an epoch, and both
#: reached 0.898 accuracy after 12; a margin of 30 trailed further.
NEW_TAG_MARGIN = 20.0

#: The encoding settings the data and the model must share, named by TaggingDataModule's
#: argument that sets each.
_SETTINGS = (
    ("lowercase", "lowercase"),
    ("corpus_scheme", "tag_scheme"),
    ("tag_scheme", "train_scheme"),
)


def extended_vocabularies(
    vocabularies: Vocabularies | None, spec: DataSpec, embedding_dim: int
) -> Vocabularies:
    """The vocabularies of a trained model (``vocabularies``, with word embeddings
    ``embedding_dim`` wide) with the new words, characters and tags of ``spec`` appended.

    Raises:
        ConfigError: the model has no vocabularies yet, ``spec`` is not a ``DataSpec``, or the
            data was read with other encoding settings or other vectors' width than the model's.
    """
    if not isinstance(spec, DataSpec):
        raise ConfigError(
            f"extended takes the new data's DataSpec (TaggingDataModule(...).spec), got "
            f"{type(spec).__name__}"
        )
    if vocabularies is None:
        raise ConfigError(
            "extended needs a trained model (SequenceTagger.load_from_checkpoint(path)); a new "
            "model is built from the data itself: SequenceTagger(spec=dm.spec)"
        )
    check_compatible(vocabularies, spec, embedding_dim)
    return union_vocabularies(vocabularies, spec.vocabularies)


def check_compatible(model: Vocabularies, spec: DataSpec, embedding_dim: int) -> None:
    """Refuse data read otherwise than the model reads text: the union would mix two ways of
    turning text into ids (cased and lowercased words, tags of two schemes)."""
    data = spec.vocabularies
    settings = [*_SETTINGS]
    if model.chars is not None:  # otherwise the model never reads characters
        settings.append(("max_word_length", "max_word_length"))
    found = [(name, getattr(data, field), getattr(model, field)) for field, name in settings]
    found.append(("unknown_shapes", data.words.unknown_shapes, model.words.unknown_shapes))
    for name, given, trained in found:
        if given != trained:
            raise ConfigError(
                f"the new data was read with {name}={given!r}, but the model was trained with "
                f"{trained!r}: build the TaggingDataModule with {name}={trained!r} to extend "
                "the model with it"
            )
    if spec.embedding_dim is not None and spec.embedding_dim != embedding_dim:
        raise ConfigError(
            f"the new data's vectors ({spec.vectors_path}) have dimension {spec.embedding_dim}, "
            f"the model's word embeddings {embedding_dim}: extend it with vectors of dimension "
            f"{embedding_dim} (those it was trained with), or without vectors"
        )


def union_vocabularies(model: Vocabularies, data: Vocabularies) -> Vocabularies:
    """The model's vocabularies with the data's new entries appended: every old id unchanged."""
    chars = model.chars
    if chars is not None and data.chars is not None:
        chars = _union(chars, data.chars)
    return replace(
        model,
        words=_union(model.words, data.words),
        tags=_union(model.tags, data.tags),
        chars=chars,
    )


def _union(old: Vocabulary, new: Vocabulary) -> Vocabulary:
    """``old``'s entries, then ``new``'s that ``old`` lacks, with ``old``'s settings."""
    items = list(old.items[old.num_specials :])
    items += [item for item in new.items[new.num_specials :] if item not in old]
    return Vocabulary(
        items,
        pad=old.pad,
        unk=old.unk,
        fallback=old.fallback,
        unknown_shapes=old.unknown_shapes,
    )


@torch.no_grad()
def grow_network(
    network: Tagger,
    old: Tagger,
    old_vocabularies: Vocabularies,
    vocabularies: Vocabularies,
    spec: DataSpec,
    rare_word_dropout: float,
) -> None:
    """Fill ``network`` (built for ``vocabularies``) from ``old``: every old tensor into the
    leading block of its grown counterpart, then the new rows as the module's doc says."""
    state = network.state_dict()  # tensors sharing the parameters' storage
    for name, value in old.state_dict().items():
        target = state[name]
        if target.dim() != value.dim() or any(
            n < o for n, o in zip(target.shape, value.shape, strict=True)
        ):
            raise RuntimeError(f"{name} shrank from {tuple(value.shape)} to {tuple(target.shape)}")
        target[tuple(slice(0, n) for n in value.shape)].copy_(value)
    _new_words(network, old, old_vocabularies.words, vocabularies.words, spec, rare_word_dropout)
    if vocabularies.chars is not None and network.encoder.char_encoder is not None:
        _new_chars(network, old_vocabularies.chars, vocabularies.chars)
    _new_tags(network, old, len(old_vocabularies.tags))
    added = {
        name: len(getattr(vocabularies, name)) - len(getattr(old_vocabularies, name))
        for name in ("words", "tags", "chars")
        if getattr(vocabularies, name) is not None
    }
    log.info("extended the model with %s", ", ".join(f"{n} {k}" for k, n in added.items()))


def _new_words(
    network: Tagger,
    old: Tagger,
    old_words: Vocabulary,
    words: Vocabulary,
    spec: DataSpec,
    rare_word_dropout: float,
) -> None:
    start = len(old_words)
    if start == len(words):
        return
    new = words.items[start:]
    data_words = spec.vocabularies.words
    rows = [data_words.lookup(word) for word in new]  # each is a word of the data
    weight = network.encoder.embeddings.weight
    if spec.embedding_matrix is not None:
        weight[start:] = torch.tensor(spec.embedding_matrix[rows]).to(weight)
    else:  # the row the model read the word with until now
        weight[start:] = old.encoder.embeddings.weight[old_words.encode(new)]
    probability = network.encoder.unknown_probability
    if spec.word_counts is not None and rare_word_dropout > 0:
        counts = torch.tensor(spec.word_counts[rows]).to(probability)
        probability[start:] = rare_word_dropout / (rare_word_dropout + counts)
    else:  # as a model built from this data: no counts, no rare-word dropout
        probability[start:] = 0.0


def _new_chars(network: Tagger, old_chars: Vocabulary | None, chars: Vocabulary) -> None:
    if old_chars is None or len(old_chars) == len(chars):
        return
    weight = network.encoder.char_encoder.embedding.weight
    weight[len(old_chars) :] = weight[old_chars.encode(chars.items[len(old_chars) :])]


def _new_tags(network: Tagger, old: Tagger, old_count: int) -> None:
    if old_count == network.num_tags:
        return
    network.emission.weight[old_count:] = 0.0
    network.emission.bias[old_count:] = new_tag_bias(old)
    crf = network.crf
    if crf is not None:
        crf.transitions[old_count:] = 0.0
        crf.transitions[:, old_count:] = 0.0
        crf.start_transitions[old_count:] = 0.0
        crf.end_transitions[old_count:] = 0.0


def new_tag_bias(old: Tagger) -> float:
    """A bias that keeps a new tag (zero weights) far below the old tags on every input.

    The encoder's features lie in [-1, 1] (an RNN's outputs, masked), so a mix ``lambda`` of
    the old output rows scores at least ``lambda . b - |lambda W|_1`` anywhere, and the best
    old tag at least that much; the mean row and each single row are tried. The bias sits
    :data:`NEW_TAG_MARGIN` below, plus, with a CRF, four times the largest transition score (a
    new tag's two transitions, against an old tag's), all stretched by a calibrated
    temperature above 1 (which divides the scores).
    """
    weight = old.emission.weight.detach().float()
    bias = old.emission.bias.detach().float()
    lowest = max(
        float(bias.mean() - weight.mean(dim=0).abs().sum()),
        float((bias - weight.abs().sum(dim=1)).max()),
    )
    gap = NEW_TAG_MARGIN
    crf = old.crf
    if crf is not None:
        scores = [
            crf.transitions[crf.allowed_transitions],
            crf.start_transitions[crf.allowed_start],
            crf.end_transitions[crf.allowed_end],
        ]
        gap += 4 * max(float(s.detach().float().abs().max()) for s in scores if s.numel())
    return lowest - gap * max(1.0, float(old.temperature))
