"""From architecture choices and vocabularies to the network, with parameters that exist early.

:func:`build_network` makes the plain ``nn.Module`` (:class:`~seqtag.models.tagger.Tagger`)
that :class:`~seqtag.SequenceTagger` trains. Its size depends on the data (words, tags,
characters, vector width), which a Lightning program may only know after an optimizer has
been made from ``model.parameters()``: Lightning's own ``LightningCLI`` does that for
``--optimizer`` as soon as it has created the model. :func:`placeholder_network` therefore
gives a model without data the same parameters, by name, as ``torch.nn.UninitializedParameter``
objects, and :func:`adopt_parameters` later moves the real values into those very objects, so an
optimizer made early holds the parameters that train.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

from seqtag.data.schemes import allowed_transitions
from seqtag.data.vocab import Vocabularies, Vocabulary
from seqtag.models.chars import build_char_encoder
from seqtag.models.encoder import BiRNNEncoder
from seqtag.models.tagger import Tagger

#: Word embedding width when there are no pretrained vectors and none is configured.
DEFAULT_EMBEDDING_DIM = 100


def build_network(
    hparams: Mapping[str, Any],
    vocabularies: Vocabularies,
    embedding_dim: int,
) -> Tagger:
    """The tagger for these vocabularies, randomly initialised (vectors are loaded apart).

    Args:
        hparams: :class:`~seqtag.SequenceTagger`'s architecture choices.
        vocabularies: what the rows of the embedding tables and the outputs stand for.
        embedding_dim: width of the word embeddings.
    """
    char_encoder = None
    if hparams["char_features"] != "none":
        char_encoder = build_char_encoder(
            hparams["char_features"],
            len(vocabularies.chars),
            char_dim=hparams["char_dim"],
            num_filters=hparams["char_hidden_size"],
            hidden_size=hparams["char_hidden_size"],
            padding_idx=vocabularies.chars.pad_id,
        )
    words = vocabularies.words
    encoder = BiRNNEncoder(
        len(words),
        embedding_dim,
        hidden_size=hparams["hidden_size"],
        num_layers=hparams["num_layers"],
        rnn_type=hparams["rnn_type"],
        dropout=hparams["dropout"],
        word_dropout=hparams["word_dropout"],
        char_encoder=char_encoder,
        freeze_embeddings=hparams["freeze_embeddings"],
        pad_id=words.pad_id,
        unk_id=words.unk_id,
    )
    if words.unknown_shapes:
        encoder.set_unknown_ids(torch.tensor([words.unknown_id(w) for w in words.items]))
    tagger = Tagger(encoder, len(vocabularies.tags), hparams["decoder"])
    if tagger.crf is not None and hparams["constrained_decoding"] and vocabularies.tag_scheme:
        tagger.crf.set_constraints(
            *allowed_transitions(vocabularies.tags.items, vocabularies.tag_scheme)
        )
    return tagger


def placeholder_network(hparams: Mapping[str, Any], embedding_dim: int | None) -> Tagger:
    """A network with the parameter names of the real one, every parameter uninitialised.

    The names depend only on the architecture choices; the shapes (vocabulary sizes, tag
    count) are filled in by :func:`adopt_parameters` once the data is known.
    """
    with_chars = hparams["char_features"] != "none"
    tiny = Vocabularies(
        words=Vocabulary([]),
        tags=Vocabulary(["_"], pad=None, unk=None),
        chars=Vocabulary([]) if with_chars else None,
    )
    network = build_network(hparams, tiny, embedding_dim or DEFAULT_EMBEDDING_DIM)
    for name, parameter in list(network.named_parameters()):
        owner_name, _, leaf = name.rpartition(".")
        owner = network.get_submodule(owner_name)
        setattr(owner, leaf, UninitializedParameter(requires_grad=parameter.requires_grad))
    return network


def has_placeholders(network: nn.Module) -> bool:
    """Whether any parameter of ``network`` still waits for its shape."""
    return any(isinstance(p, UninitializedParameter) for p in network.parameters())


def adopt_parameters(network: nn.Module, previous: nn.Module) -> None:
    """Give ``network`` the parameter *objects* of ``previous``, holding ``network``'s values.

    Whoever holds a parameter of ``previous`` (an optimizer made early) then holds the
    corresponding parameter of ``network``. Both must have the same parameter names.
    """
    old = dict(previous.named_parameters())
    new = dict(network.named_parameters())
    if old.keys() != new.keys():
        raise RuntimeError(
            f"the networks differ in their parameters: {sorted(old.keys() ^ new.keys())[:5]}"
        )
    for name, value in new.items():
        keep = old[name]
        if isinstance(keep, UninitializedParameter):
            keep.materialize(value.shape, device=value.device, dtype=value.dtype)
        else:
            keep.data = torch.empty_like(value)
        with torch.no_grad():
            keep.copy_(value)
        keep.requires_grad_(value.requires_grad)
        owner_name, _, leaf = name.rpartition(".")
        setattr(network.get_submodule(owner_name), leaf, keep)
