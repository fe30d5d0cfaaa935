"""A model's state dict describes its own network, so any ``load_state_dict`` can build it.

The network's shapes depend on the data (words, tags, characters, the vectors' width). A
plain ``state_dict()`` of the tensors alone can therefore only be loaded into a model that
was built from the same data, and Lightning and its callbacks load state dicts into models
that were not: ``ddp_spawn`` trains in worker processes and loads their ``state_dict()`` into
the user's model object in the main process, which never saw the data; a user saves
``model.state_dict()`` and loads it into a fresh ``SequenceTagger()``.

torch's public ``get_extra_state``/``set_extra_state`` pair carries that description inside
the state dict, under :data:`~seqtag.checkpoint.schema.EXTRA_STATE_KEY`: the vocabularies in
the plain form of the checkpoint's ``seqtag`` section, the architecture arguments and the
resolved embedding width, versioned like the section. torch loads a module's own extra state
before its children's tensors, so the network exists, of the right shapes, when they arrive.

Checkpoint files keep their layout: the ``seqtag`` section (and the hyper-parameters) stay the
one place a file says this, :meth:`SequenceTagger.on_save_checkpoint` leaves the entry out, and
:func:`restore_extra_state` puts it back, from the section, on the way in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from seqtag.checkpoint.io import (
    ARCHITECTURE,
    CHECKPOINT_FORMAT_VERSION,
    read_versioned_vocabularies,
)
from seqtag.checkpoint.schema import EXTRA_STATE_KEY, is_plain_data
from seqtag.data.vocab import Vocabularies
from seqtag.errors import CheckpointError

#: What the messages call a state dict's description of its network.
SOURCE = "the state dict"


def network_description(
    vocabularies: Vocabularies, architecture: Mapping[str, Any]
) -> dict[str, Any]:
    """The extra state of a built model: plain data (``torch.load(weights_only=True)`` reads it).

    Args:
        vocabularies: what the rows of the embedding tables and the outputs stand for.
        architecture: the model's arguments that fix the network's shapes (see
            :data:`~seqtag.checkpoint.io.ARCHITECTURE`), ``embedding_dim`` resolved to the
            network's width.
    """
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "vocabularies": vocabularies.to_dict(),
        "architecture": {name: architecture[name] for name in ARCHITECTURE},
    }


def read_network_description(state: Any) -> tuple[Vocabularies, dict[str, Any]]:
    """The vocabularies and architecture a state dict's extra state describes, checked.

    Raises:
        CheckpointError: it is not such a description, is damaged, or is from a newer seqtag.
    """
    architecture = state.get("architecture") if isinstance(state, dict) else None
    if not isinstance(architecture, dict) or "vocabularies" not in state:
        raise CheckpointError(
            f"{SOURCE}'s {EXTRA_STATE_KEY!r} is not the description of a seqtag network "
            "(save it with SequenceTagger.state_dict())"
        )
    vocabularies = read_versioned_vocabularies(state, SOURCE)
    missing = [name for name in ARCHITECTURE if name not in architecture]
    width = architecture.get("embedding_dim")
    if missing or not is_plain_data(architecture) or not isinstance(width, int) or width < 1:
        raise CheckpointError(
            f"{SOURCE}'s network description is damaged (architecture {architecture!r})"
        )
    return vocabularies, {name: architecture[name] for name in ARCHITECTURE}


def restore_extra_state(checkpoint: dict[str, Any], description: dict[str, Any]) -> None:
    """Put the network's description back into a checkpoint's ``state_dict``, where the model's
    ``load_state_dict`` reads it (with ``strict`` loading it must be there).

    ``description`` is the model's own, built from the checkpoint's section and
    hyper-parameters. A file whose state dict holds one already must agree with them.
    """
    weights = checkpoint["state_dict"]
    held = weights.get(EXTRA_STATE_KEY)
    if held is not None and read_network_description(held) != read_network_description(description):
        raise CheckpointError(
            f"its state dict's {EXTRA_STATE_KEY!r} describes another network than its "
            "seqtag section and hyper-parameters (the file was edited)"
        )
    weights[EXTRA_STATE_KEY] = description
