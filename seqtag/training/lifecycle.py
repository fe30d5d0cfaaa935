"""The life of SequenceTagger's network: built from data, a checkpoint or a state dict, and saved.

:class:`NetworkLifecycle` is the part of :class:`~seqtag.SequenceTagger` that decides when its
network exists and what describes it; ``module.py`` holds what the model does with it (steps,
metrics, optimizers, tagging). The network's shapes come from the data, so a model made
without ``spec=`` has none until something provides them, and every Lightning habit that copies
or loads the model must find it built:

- **A fit** builds it from the trainer's DataModule in ``configure_callbacks``: Lightning calls
  that hook when a trainer takes the model, in every process (``ddp_spawn``'s workers
  included), after attaching the DataModule and before ``prepare_data`` and every ``setup``.
  StochasticWeightAveraging and WeightAveraging copy the model in their ``setup``, and
  ModelPruning its layers: they copy the real network. ``configure_model``, Lightning's hook
  for building layers, runs after those ``setup`` hooks, and WeightAveraging calls it itself,
  with a warning about sharding, on every model that overrides it: so this model does not.
  (The DataModule's ``spec`` is therefore read before its ``prepare_data``: a subclass that
  downloads its files there must do so in its constructor, or build with ``spec=``.)
- **A state dict** describes its network (torch's ``get_extra_state``/``set_extra_state``, see
  :mod:`seqtag.checkpoint.extra_state`): ``load_state_dict`` into a model without a network
  builds it first. So the weights a ``ddp_spawn`` worker sends back load into the user's model
  object, which never met the data, and ``torch.save(model.state_dict())`` loads into a fresh
  ``SequenceTagger()``. A checkpoint file's ``state_dict`` leaves the description to the file's
  ``seqtag`` section: it loads into a built model as it always did, and into one without a
  network is a one-line error naming ``load_from_checkpoint``.
- **A checkpoint** decides: its vocabularies and architecture replace the model's.

Until then the parameters are placeholders (:func:`~seqtag.training.network.placeholder_network`)
that the build fills in place, because an optimizer made before ``fit`` (plain
``LightningCLI --optimizer``) holds them. The placeholders copy and pickle like any parameter.

The embedding width has one owner, the network (``tagger.encoder.embeddings``): ``hparams``
stay the arguments as given (``embedding_dim=None``, "the vectors' width", is never rewritten),
and what records the model reads the width from the network: ``hparams_initial``, which
Lightning's loggers write to ``hparams.yaml``, the checkpoint's hyper-parameters (the arguments
that rebuild exactly this network, as files always held them) and the state dict's extra state.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import IO, TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import AttributeDict

from seqtag.checkpoint.extra_state import (
    SOURCE,
    network_description,
    read_network_description,
    restore_extra_state,
)
from seqtag.checkpoint.io import (
    build_from_checkpoint,
    check_architecture,
    take_validated,
    validate_checkpoint,
    warn_other_class,
    write_checkpoint_section,
)
from seqtag.checkpoint.schema import (
    EXTRA_STATE_KEY,
    check_resume_state,
    check_weights,
    restorable_hyperparameters,
)
from seqtag.data.datamodule import TaggingDataModule
from seqtag.data.spec import DataSpec
from seqtag.data.vocab import Vocabularies
from seqtag.errors import CheckpointError, ConfigError
from seqtag.models.tagger import Tagger
from seqtag.training.evaluation import build_metrics
from seqtag.training.extension import extended_vocabularies, grow_network
from seqtag.training.network import (
    DEFAULT_EMBEDDING_DIM,
    adopt_parameters,
    build_network,
    embedding_width,
)

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

#: What using a model without a network says.
NOT_BUILT = (
    "the model has no vocabularies yet: train it (seqtag fit) or load a checkpoint "
    "(--ckpt_path, SequenceTagger.load_from_checkpoint)"
)


class NetworkLifecycle(pl.LightningModule):
    """Building, saving and restoring the network of :class:`~seqtag.SequenceTagger`.

    The subclass's constructor saves the hyper-parameters and sets ``tagger`` (placeholders
    until built) and ``vocabularies`` (``None`` until built).
    """

    tagger: Tagger
    vocabularies: Vocabularies | None

    # -- building -------------------------------------------------------------------------
    def build(self, spec: DataSpec) -> None:
        """Create the network for this data, starting from its pretrained vectors."""
        dim = embedding_width(spec.embedding_dim, spec.vectors_path, self.hparams.embedding_dim)
        vocabularies = spec.vocabularies
        if self.hparams.char_features == "none" and vocabularies.chars is not None:
            # The model decides whether characters are used; the data only offers them.
            vocabularies = replace(vocabularies, chars=None)
        self._build(vocabularies, dim)
        encoder = self.tagger.encoder
        if spec.word_counts is not None:
            counts = torch.tensor(spec.word_counts, device=self.device)
            encoder.set_rare_word_dropout(counts, self.hparams.rare_word_dropout)
        if spec.embedding_matrix is not None:
            encoder.load_pretrained(torch.tensor(spec.embedding_matrix, device=self.device))
        elif self.hparams.freeze_embeddings:
            log.warning("freeze_embeddings is set but there are no pretrained vectors")

    def extended(self, spec: DataSpec) -> Self:
        """A copy of this trained model that also knows the words, characters and tags of new
        data (``TaggingDataModule(...).spec``), to fine-tune on it: old ids and every old
        weight are kept, new words start from the data's pretrained vectors, new tags from
        output rows that leave every prediction as it was until training (see
        :mod:`seqtag.training.extension`). This model is left as it is.

        Raises:
            ConfigError: the model is not trained, or the data is read with other encoding
                settings (``lowercase``, tag schemes, ...) or vectors of another width.
        """
        width = self.tagger.encoder.embeddings.embedding_dim
        vocabularies = extended_vocabularies(self.vocabularies, spec, width)
        grown = copy.deepcopy(self)  # without its trainer (LightningModule.__getstate__)
        grown._build(vocabularies, width)
        rare_word_dropout = self.hparams.rare_word_dropout
        grow_network(
            grown.tagger, self.tagger, self.vocabularies, vocabularies, spec, rare_word_dropout
        )
        return grown

    def _build(self, vocabularies: Vocabularies, embedding_dim: int) -> None:
        """A new network for these vocabularies, in the parameter objects already held."""
        if vocabularies.chars is None and self.hparams.char_features != "none":
            raise ConfigError(
                f"char_features={self.hparams.char_features!r} needs a character vocabulary, "
                "and these vocabularies have none"
            )
        network = build_network(self.hparams, vocabularies, embedding_dim).to(self.device)
        adopt_parameters(network, self.tagger)
        self.tagger = network
        self.vocabularies = vocabularies
        build_metrics(self)  # val/test accuracy, span F1, test confusion and calibration

    def _architecture(self) -> dict[str, Any]:
        """The hyper-parameters with the built network's embedding width (its one owner)."""
        if self.vocabularies is None:
            raise CheckpointError(NOT_BUILT)
        return {**self.hparams, "embedding_dim": self.tagger.encoder.embeddings.embedding_dim}

    def configure_callbacks(self) -> list[pl.Callback]:
        """Build the network from the trainer's DataModule when a ``fit`` takes a model without
        one (see the module's doc for why here), and hand its vocabularies to the DataModule.
        Adds no callback."""
        if self.vocabularies is None and self._fitting():
            spec = getattr(self.trainer.datamodule, "spec", None)
            if not isinstance(spec, DataSpec):
                raise ConfigError(
                    "SequenceTagger has no vocabularies: train it with a TaggingDataModule "
                    "(trainer.fit(model, datamodule=dm)), or build it from one "
                    "(SequenceTagger(spec=dm.spec, ...)) before passing your own dataloaders"
                )
            self.build(spec)
        self._hand_vocabularies_to_the_data()
        return []

    def _hand_vocabularies_to_the_data(self) -> None:
        """Tell the trainer's TaggingDataModule to encode with this model's vocabularies: the
        model owns them, the DataModule never reads the model (called when a trainer takes the
        model, and when a checkpoint replaces them, before any dataloader is made)."""
        try:
            datamodule = self.trainer.datamodule
        except RuntimeError:  # not attached to a trainer
            return
        if self.vocabularies is not None and isinstance(datamodule, TaggingDataModule):
            datamodule.encode_with(self.vocabularies)

    @property
    def hparams_initial(self) -> AttributeDict:
        """What Lightning's loggers record (``hparams.yaml``): the arguments as given, with the
        network's embedding width once it is built. ``hparams`` keep the arguments as given."""
        recorded = super().hparams_initial  # a copy
        if getattr(self, "vocabularies", None) is not None:
            recorded["embedding_dim"] = self._architecture()["embedding_dim"]
        return recorded

    def _fitting(self) -> bool:
        try:
            return self.trainer.state.fn == TrainerFn.FITTING
        except RuntimeError:  # no trainer: load_from_checkpoint
            return False

    # -- state dicts ----------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        """The network's description, carried by every state dict (plain data; see
        :mod:`seqtag.checkpoint.extra_state`), so ``load_state_dict`` can build it."""
        architecture = self._architecture()
        return network_description(self.vocabularies, architecture)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """torch's, also for a state dict that does not describe its network: a checkpoint
        file's ``state_dict`` (its ``seqtag`` section does). That loads into a built model as
        it always did, and into a model without a network is a one-line error saying how."""
        if EXTRA_STATE_KEY not in state_dict:
            if self.vocabularies is None:
                raise CheckpointError(
                    f"{SOURCE} does not say which network it is for (a checkpoint's "
                    "'state_dict' leaves that to the file): load the file with "
                    "SequenceTagger.load_from_checkpoint(path), or load these weights into a "
                    "model built from the same data (SequenceTagger(spec=dm.spec, ...))"
                )
            state_dict = copy.copy(state_dict)  # the caller's stays as it is
            state_dict[EXTRA_STATE_KEY] = self.get_extra_state()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def set_extra_state(self, state: Any) -> None:
        """Build the network a state dict describes before torch loads its tensors (a module's
        extra state loads before its children's); a model already built must be that network."""
        vocabularies, architecture = read_network_description(state)
        remedy = "build the model with the same arguments"
        check_architecture(architecture, self.hparams, SOURCE, remedy)
        if self.vocabularies is None:
            self._build(vocabularies, architecture["embedding_dim"])
        elif network_description(vocabularies, architecture) != self.get_extra_state():
            raise CheckpointError(
                f"{SOURCE} is of a network for other vocabularies or another embedding width "
                "than this model's: load it into a SequenceTagger built without spec="
            )

    # -- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The file's ``seqtag`` section and hyper-parameters describe the network, so the state
        dict's own description (its extra state) is left out; loading puts it back."""
        width = self._architecture()["embedding_dim"]
        checkpoint.get("state_dict", {}).pop(EXTRA_STATE_KEY, None)
        write_checkpoint_section(checkpoint, self.vocabularies, type(self), width)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint decides: its vocabularies and architecture replace the model's
        (validated first, however it was loaded; errors name the file a trainer loads)."""
        try:
            self._restore(checkpoint)
        except CheckpointError as err:
            name = self._checkpoint_file()
            if name and name not in str(err):
                raise CheckpointError(f"{name}: {err}") from None
            raise

    def _restore(self, checkpoint: dict[str, Any]) -> None:
        warn_other_class(checkpoint, type(self))
        vocabularies = take_validated(checkpoint)
        if vocabularies is None:
            vocabularies = validate_checkpoint(checkpoint, type(self))
        else:  # read by the trainer's plugin, which does not know the model class
            checkpoint["hyper_parameters"] = restorable_hyperparameters(checkpoint, type(self))
        stored = checkpoint["hyper_parameters"]
        check_architecture(stored, self.hparams)  # an unset embedding_dim takes the stored one
        width = stored.get("embedding_dim") or self.hparams.embedding_dim or DEFAULT_EMBEDDING_DIM
        built = self.vocabularies is not None
        if not built or (self.vocabularies, self._architecture()["embedding_dim"]) != (
            vocabularies,
            width,
        ):
            try:
                self._build(vocabularies, width)
            except ConfigError as err:  # e.g. a character model without characters
                raise CheckpointError(f"its vocabularies do not fit its model: {err}") from None
        restore_extra_state(checkpoint, self.get_extra_state())
        check_weights(checkpoint["state_dict"], self.state_dict())
        self._hand_vocabularies_to_the_data()
        if self._fitting():
            check_resume_state(checkpoint)

    def _checkpoint_file(self) -> str | None:
        """The file the trainer is restoring, if a trainer is."""
        try:
            path = self.trainer.ckpt_path
        except RuntimeError:  # not attached to a trainer (load_from_checkpoint)
            return None
        return str(path) if path else None

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike[str] | IO[bytes],
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool | None = True,
        **kwargs: Any,
    ) -> Self:
        """Build the model a checkpoint describes, from plain data only: nothing it names is
        imported or called, its optimizer and scheduler are never restored; ``kwargs`` replace
        its hyper-parameters (see :func:`seqtag.checkpoint.io.build_from_checkpoint`)."""
        return build_from_checkpoint(
            cls,
            checkpoint_path,
            map_location=map_location,
            hparams_file=hparams_file,
            strict=strict,
            weights_only=weights_only,
            overrides=kwargs,
        )
