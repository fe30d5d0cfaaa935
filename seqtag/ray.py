"""Tagging a Ray Data dataset: a callable class for ``Dataset.map_batches``.

Needs the ``ray`` extra (``pip install "seqtag[ray]"``); ``import seqtag`` never imports this
module, nor Ray. Each Ray actor loads the checkpoint once, then tags batch after batch with
:meth:`seqtag.SequenceTagger.tag`::

    import ray
    from seqtag.ray import RayTagger

    ds = ray.data.read_json("corpus/")  # one {"tokens": [...], ...} per line
    ds = ds.map_batches(
        RayTagger,
        fn_constructor_kwargs={"ckpt_path": "/shared/models/upos.ckpt"},
        compute=ray.data.ActorPoolStrategy(size=4),  # 4 actors, each with its own model
        batch_size=1024,  # rows per call; the model runs them in length-sorted batches of 256
        num_cpus=2,  # per actor; Ray sets the actor's OMP_NUM_THREADS to this, torch follows
    )
    ds.write_parquet("tagged/")

``examples/ray_tagging.py`` runs this from JSON Lines or Parquet files to files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

try:
    import ray  # noqa: F401  (only to fail here, at import, when the extra is missing)
except ImportError as error:
    raise ImportError('seqtag.ray needs Ray Data: pip install "seqtag[ray]"') from error

import numpy as np
import torch

from seqtag.errors import ConfigError
from seqtag.module import SequenceTagger

__all__ = ["RayTagger"]

Device = Literal["auto", "cpu", "cuda"]


class RayTagger:
    """Adds predicted tags to batches of a Ray Data dataset; pass the class to ``map_batches``.

    Ray makes one instance per actor, so the checkpoint is read once per actor, not per batch.
    A batch is a ``dict`` of numpy arrays (``batch_format="numpy"``, Ray's default) or a pandas
    ``DataFrame`` (``batch_format="pandas"``). Each row's ``tokens_column`` holds one sentence
    as a list (or array) of token strings. The batch comes back with every column unchanged
    plus ``tags_column``, the row's tags as a list of strings (one per token, in the corpus's
    tag scheme, as ``seqtag predict`` writes them), and with ``confidences=True`` also
    ``confidences_column``, one float per token. An empty token list gets an empty tag list.

    Call it as ``ds.map_batches(RayTagger, fn_constructor_kwargs={"ckpt_path": ...},
    compute=ray.data.ActorPoolStrategy(size=N), batch_size=1024)`` (Ray 2.9 and later; the
    older ``concurrency=N`` still works but is deprecated since Ray 2.4x). Then:

    - CPU actors: ``num_cpus=k`` reserves ``k`` cores per actor and makes Ray set the actor's
      ``OMP_NUM_THREADS`` to ``k``, which torch uses for its threads. ``N`` actors of ``k``
      cores should not exceed the cluster's cores; one or two cores per actor, and more
      actors, usually tag faster than a few wide actors.
    - GPU actors: ``num_gpus=1`` gives each actor a GPU (``num_gpus=0.5`` puts two actors on
      one), and ``device="auto"`` then runs the model there; raise ``batch_size`` (rows per
      call) and ``model_batch_size`` to keep the GPU busy. Without ``num_gpus``, Ray hides the
      GPUs from the actor and ``"auto"`` tags on the CPU.

    The checkpoint path must be readable from every node that runs an actor: a shared file
    system, or a URL that Lightning's loader opens through fsspec (``s3://...`` with s3fs).

    Args:
        ckpt_path: the checkpoint, as for ``SequenceTagger.load_from_checkpoint``.
        tokens_column: the column holding each row's tokens.
        model_batch_size: sentences per forward pass (``tag()``'s ``batch_size``); each call's
            rows are sorted by length and cut into batches of this size, so a Ray
            ``batch_size`` several times larger means less padding.
        confidences: also add each token's confidence (the tag's probability; with a CRF its
            marginal).
        device: ``"auto"`` (CUDA when the actor sees a GPU, else the CPU), ``"cpu"`` or
            ``"cuda"``.
        tags_column: the name of the column of predicted tags; must not exist in the input.
        confidences_column: the name of the column of confidences, with ``confidences=True``.

    Raises:
        ConfigError: an unknown ``device``, ``"cuda"`` without a visible GPU, or output column
            names that clash; on a batch, a missing ``tokens_column`` or an output column that
            is already there.
        TypeError: a batch that is neither a dict nor a DataFrame, or a row whose tokens are
            not a list of strings.
    """

    def __init__(
        self,
        ckpt_path: str,
        tokens_column: str = "tokens",
        model_batch_size: int = 256,
        confidences: bool = False,
        device: Device = "auto",
        tags_column: str = "tags",
        confidences_column: str = "confidences",
    ) -> None:
        if model_batch_size < 1:
            raise ConfigError(f"RayTagger: model_batch_size must be >= 1, not {model_batch_size}")
        if confidences and tags_column == confidences_column:
            raise ConfigError(
                f"RayTagger: tags_column and confidences_column are both {tags_column!r}"
            )
        self.tokens_column = tokens_column
        self.model_batch_size = model_batch_size
        self.confidences = confidences
        self.tags_column = tags_column
        self.confidences_column = confidences_column
        self.device = _resolve_device(device)
        self.model = SequenceTagger.load_from_checkpoint(ckpt_path, map_location=self.device)
        self.model.eval()

    def __call__(self, batch: Any) -> Any:
        """The batch with the tags (and confidences) of every row added."""
        if isinstance(batch, Mapping):
            names = list(batch)
        elif _is_dataframe(batch):
            names = list(batch.columns)
        else:
            raise TypeError(
                f"RayTagger got a batch of type {type(batch).__name__}; call map_batches with "
                "batch_format='numpy' (the default) or batch_format='pandas'"
            )
        self._check_columns(names)
        sentences = [
            _tokens(row, position, batch, names, self.tokens_column)
            for position, row in enumerate(batch[self.tokens_column])
        ]
        tagged = self.model.tag(sentences, batch_size=self.model_batch_size)
        added = {self.tags_column: [[tag for tag, _ in sentence] for sentence in tagged]}
        if self.confidences:
            added[self.confidences_column] = [[p for _, p in sentence] for sentence in tagged]
        if isinstance(batch, Mapping):
            return {**batch, **{name: _object_array(rows) for name, rows in added.items()}}
        return batch.assign(**added)  # a new DataFrame: Ray's batches may be read-only

    def _check_columns(self, names: list[str]) -> None:
        if self.tokens_column not in names:
            raise ConfigError(
                f"RayTagger: the batch has no column {self.tokens_column!r} (its columns: "
                f"{', '.join(map(repr, names))}); set tokens_column to the column of token lists"
            )
        outputs = [self.tags_column] + ([self.confidences_column] if self.confidences else [])
        for name in outputs:
            if name in names:
                raise ConfigError(
                    f"RayTagger: the batch already has a column {name!r}; name the output "
                    "column otherwise (tags_column=..., confidences_column=...) to keep both"
                )


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "RayTagger: device='cuda', but this actor sees no GPU; give map_batches num_gpus=1 "
            "(or a fraction), or use device='auto'"
        )
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"RayTagger: device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    return torch.device(device)


def _is_dataframe(batch: Any) -> bool:
    try:
        import pandas
    except ImportError:
        return False
    return isinstance(batch, pandas.DataFrame)


def _tokens(row: Any, position: int, batch: Any, names: list[str], column: str) -> list[str]:
    """One row's tokens as a list of strings, or a TypeError that says which row and why."""
    if (isinstance(row, np.ndarray) and row.ndim == 1) or isinstance(row, (list, tuple)):
        tokens = list(row)
        bad = next((i for i, token in enumerate(tokens) if not isinstance(token, str)), None)
        if bad is None:
            return tokens
        problem = f"token {bad} is a {type(tokens[bad]).__name__} ({tokens[bad]!r})"
    else:
        problem = f"it holds a {type(row).__name__} ({_short(row)})"
        if isinstance(row, str):
            problem += "; split sentences into tokens first"
    raise TypeError(
        f"RayTagger: row {position} of the batch ({_describe(batch, names, position, column)}): "
        f"{column!r} must be a list of token strings, but {problem}"
    )


def _describe(batch: Any, names: list[str], position: int, column: str) -> str:
    """The row's other fields (an id, a file name), to find it in the input."""
    others = [name for name in names if name != column][:4]
    if not others:
        return "no other columns"
    if isinstance(batch, Mapping):
        values = {name: batch[name][position] for name in others}
    else:
        values = {name: batch[name].iloc[position] for name in others}
    return ", ".join(f"{name}={_short(value)}" for name, value in values.items())


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _object_array(rows: list[list[Any]]) -> np.ndarray:
    """A 1-d object array of lists: Ray stores it as a list column, even when lengths agree."""
    array = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        array[i] = row
    return array
