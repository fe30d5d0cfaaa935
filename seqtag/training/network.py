"""From architecture choices and vocabularies to the network, with parameters that exist early.

:func:`build_network` makes the plain ``nn.Module`` (:class:`~seqtag.models.tagger.Tagger`)
that :class:`~seqtag.SequenceTagger` trains. Its size depends on the data (words, tags,
characters, vector width), which a Lightning program may only know after an optimizer has
been made from ``model.parameters()``: Lightning's own ``LightningCLI`` does that for
``--optimizer`` as soon as it has created the model. :func:`placeholder_network` therefore
gives a model without data the same parameters, by name, as ``torch.nn.UninitializedParameter``
objects, and :func:`adopt_parameters` later moves the real values into those very objects, so an
optimizer made early holds the parameters that train. They still pay for that one use, and cost
nothing else: they copy and pickle like any parameter (``copy.deepcopy``, ``pickle``, spawned
processes), and what cannot use a placeholder (a forward pass, a callback averaging or pruning
weights) comes after the build, which a ``fit`` does the moment it takes the model
(:mod:`seqtag.training.lifecycle`). Real parameters of a one-word network instead would train
and save silently as a wrong model; a placeholder refuses to be used.

A network too large for the machine (``hidden_size=10000000``) is refused before anything is
allocated: :func:`check_fits_in_memory` counts its parameters on PyTorch's ``meta`` device (no
memory) and compares their bytes with the machine's memory; an allocation that fails anyway is
turned into the same one-line :class:`~seqtag.errors.ConfigError`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import UninitializedParameter

from seqtag.data.schemes import allowed_transitions
from seqtag.data.vocab import Vocabularies, Vocabulary
from seqtag.errors import ConfigError, VectorFormatError
from seqtag.models.chars import build_char_encoder
from seqtag.models.encoder import BiRNNEncoder
from seqtag.models.tagger import Tagger

#: Word embedding width when there are no pretrained vectors and none is configured.
DEFAULT_EMBEDDING_DIM = 100
#: Architecture options that set the network's size, named when it does not fit in memory.
SIZE_OPTIONS = ("hidden_size", "num_layers", "embedding_dim", "char_dim", "char_hidden_size")


def embedding_width(vectors_dim: int | None, vectors_path: str | None, asked: int | None) -> int:
    """The word-embedding width: the pretrained vectors' when there are vectors (``asked``, the
    model's ``embedding_dim``, must then agree), else ``asked``, else the default."""
    if vectors_dim is None:
        return asked or DEFAULT_EMBEDDING_DIM
    if asked is not None and asked != vectors_dim:
        raise VectorFormatError(
            path=vectors_path or "pretrained vectors",
            line=None,
            message=f"vectors have dimension {vectors_dim}, but model.embedding_dim is {asked}; "
            "remove model.embedding_dim to take the vectors' dimension",
        )
    return vectors_dim


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

    Raises:
        ConfigError: the network does not fit in this machine's memory.
    """
    check_fits_in_memory(hparams, vocabularies, embedding_dim)
    try:
        return _build_network(hparams, vocabularies, embedding_dim)
    except (MemoryError, RuntimeError) as err:  # torch.OutOfMemoryError is a RuntimeError
        if not _is_allocation_failure(err):
            raise
        why = "allocating its parameters failed"
        raise ConfigError(_does_not_fit(hparams, embedding_dim, "model.", why)) from None


def _build_network(
    hparams: Mapping[str, Any],
    vocabularies: Vocabularies,
    embedding_dim: int,
    counting: bool = False,
) -> Tagger:
    """:func:`build_network` itself; ``counting`` leaves out what reads tensor values (the
    unknown-word ids, the CRF constraints: small buffers), which the meta device cannot."""
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
    if words.unknown_shapes and not counting:
        encoder.set_unknown_ids(torch.tensor([words.unknown_id(w) for w in words.items]))
    tagger = Tagger(encoder, len(vocabularies.tags), hparams["decoder"])
    constrained = hparams["constrained_decoding"] and vocabularies.tag_scheme and not counting
    if tagger.crf is not None and constrained:
        tagger.crf.set_constraints(
            *allowed_transitions(vocabularies.tags.items, vocabularies.tag_scheme)
        )
    return tagger


def check_fits_in_memory(
    hparams: Mapping[str, Any],
    vocabularies: Vocabularies | None = None,
    embedding_dim: int | None = None,
    prefix: str = "model.",
) -> None:
    """Refuse a network whose parameters alone need more bytes than this machine has.

    The parameters are counted on the ``meta`` device, which allocates nothing. Without
    ``vocabularies`` (a command line, before the data is read) the count is that of one-word
    vocabularies, and without ``embedding_dim`` (the vectors decide it) of width 1: a lower
    bound, so a network that fits is never refused.

    Args:
        hparams: :class:`~seqtag.SequenceTagger`'s architecture choices.
        vocabularies: the network's vocabularies, if known.
        embedding_dim: width of the word embeddings, if known.
        prefix: how the options are spelled in the message (``model.init_args.`` on the
            command line).

    Raises:
        ConfigError: ``the model does not fit in memory: ...``, naming the size options.
    """
    if vocabularies is None:
        vocabularies = _tiny_vocabularies(hparams["char_features"] != "none")
    with torch.device("meta"):
        network = _build_network(hparams, vocabularies, embedding_dim or 1, counting=True)
    elements = sum(t.numel() for t in [*network.parameters(), *network.buffers()])
    needed = elements * torch.get_default_dtype().itemsize
    available = memory_bytes()
    if available is not None and needed > available:
        raise ConfigError(
            _does_not_fit(
                hparams,
                embedding_dim,
                prefix,
                f"its parameters alone need {_gigabytes(needed)}, this machine has "
                f"{_gigabytes(available)}",
            )
        )


def memory_bytes() -> int | None:
    """This machine's memory as this process may use it: the physical memory, or a smaller
    cgroup limit (a container); ``None`` where neither can be read."""
    limits = []
    with contextlib.suppress(AttributeError, OSError, ValueError):
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    for name in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limits.append(int(Path(name).read_text().strip()))
        except (OSError, ValueError):
            continue
    limits = [limit for limit in limits if limit > 0]
    return min(limits) if limits else None


def _is_allocation_failure(err: BaseException) -> bool:
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    text = str(err).lower()
    return "can't allocate memory" in text or "out of memory" in text


def _does_not_fit(
    hparams: Mapping[str, Any], embedding_dim: int | None, prefix: str, why: str
) -> str:
    values = {**{key: hparams.get(key) for key in SIZE_OPTIONS}, "embedding_dim": embedding_dim}
    if hparams.get("char_features", "none") == "none":
        values.pop("char_dim")
        values.pop("char_hidden_size")
    named = ", ".join(f"{prefix}{key}={value}" for key, value in values.items() if value)
    return f"the model does not fit in memory ({named}): {why}; choose smaller sizes"


def _gigabytes(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"


def _tiny_vocabularies(with_chars: bool) -> Vocabularies:
    """One word, one tag, one character: what the network's size is without the data."""
    return Vocabularies(
        words=Vocabulary([]),
        tags=Vocabulary(["_"], pad=None, unk=None),
        chars=Vocabulary([]) if with_chars else None,
    )


def placeholder_network(hparams: Mapping[str, Any], embedding_dim: int | None) -> Tagger:
    """A network with the parameter names of the real one, every parameter uninitialised.

    The names depend only on the architecture choices; the shapes (vocabulary sizes, tag
    count) are filled in by :func:`adopt_parameters` once the data is known.
    """
    tiny = _tiny_vocabularies(hparams["char_features"] != "none")
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
