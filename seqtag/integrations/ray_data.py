"""Tagging a Ray Data dataset: a callable class for ``Dataset.map_batches``.

Needs the ``ray`` extra (``pip install "seqtag[ray]"``); ``import seqtag`` never imports this
module, nor Ray. Each Ray actor loads the checkpoint once, then tags batch after batch with
:meth:`seqtag.SequenceTagger.tag`::

    import ray
    from seqtag.integrations.ray_data import RayTagger

    ds = ray.data.read_json("corpus/")  # one {"tokens": [...], ...} per line
    ds = ds.map_batches(
        RayTagger,
        fn_constructor_kwargs={"ckpt_path": "/shared/models/upos.ckpt"},
        compute=ray.data.ActorPoolStrategy(size=4),  # 4 actors, each with its own model
        batch_size=1024,  # rows per call; the model runs them in length-sorted batches of 256
        batch_format="pyarrow",  # other columns pass through as Arrow, untouched
        num_cpus=1,  # per actor; Ray sets the actor's OMP_NUM_THREADS to this, torch follows
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
    raise ImportError(
        'seqtag.integrations.ray_data needs Ray Data: pip install "seqtag[ray]"'
    ) from error

import numpy as np
import torch

from seqtag.data.io.text_files import first_token_problem
from seqtag.errors import ConfigError
from seqtag.training.module import SequenceTagger

__all__ = ["RayTagger"]

Device = Literal["auto", "cpu", "cuda"]


class RayTagger:
    """Adds predicted tags to batches of a Ray Data dataset; pass the class to ``map_batches``.

    Ray makes one instance per actor, so the checkpoint is read once per actor, not per batch.
    Each row's ``tokens_column`` holds one sentence as a list of token strings. The batch comes
    back with ``tags_column`` added, the row's tags as a list of strings (one per token, in the
    corpus's tag scheme, as ``seqtag predict`` writes them), with ``confidences=True`` also
    ``confidences_column`` (one float per token), and every other column as it came in. An empty
    token list gets an empty tag list.

    Batches may come in any of Ray's batch formats:

    - ``batch_format="pyarrow"``: recommended; the other columns pass through untouched and the
      new ones are Arrow ``list<string>`` and ``list<double>`` columns.
    - ``batch_format="numpy"`` (Ray's default): a ``dict`` of numpy arrays, in which Ray hands a
      list column over as an object array of arrays. Returned as such, Ray would store it as
      pickled Python objects, not as a list column again (ray-project/ray#49261), and
      ``write_json`` could not write it; so such columns are returned as object arrays of
      lists, which Ray stores with their original list type.
    - ``batch_format="pandas"``: a ``DataFrame``; a new one comes back.

    Call it as ``ds.map_batches(RayTagger, fn_constructor_kwargs={"ckpt_path": ...},
    compute=ray.data.ActorPoolStrategy(size=N), batch_size=1024, batch_format="pyarrow")``
    (Ray's older ``concurrency=N`` does the same, and is deprecated in recent releases). Then:

    - CPU actors: ``num_cpus=k`` reserves ``k`` cores per actor (default 1) and Ray sets the
      actor's ``OMP_NUM_THREADS`` to ``k``, which torch follows. Leave cores free for Ray's
      read and write tasks: ``N`` actors must hold fewer than all the cluster's cores, or the
      pipeline waits for ever (on a 2-core machine, one actor of one core).
    - GPU actors: ``num_gpus=1`` gives each actor a GPU (``num_gpus=0.5`` puts two on one) and
      ``device="auto"`` then runs the model there; raise ``batch_size`` (rows per call) and
      ``model_batch_size`` to keep it busy. Without ``num_gpus``, Ray hides the GPUs from the
      actor and ``"auto"`` tags on the CPU.

    The checkpoint path must be readable from every node that runs an actor: a shared file
    system, or a URL that Lightning's loader opens through fsspec (``s3://...`` with s3fs).

    Args:
        ckpt_path: the checkpoint, as for ``SequenceTagger.load_from_checkpoint``.
        tokens_column: the column holding each row's tokens.
        model_batch_size: sentences per forward pass (``tag()``'s ``batch_size``). Each call's
            rows are sorted by length and cut into batches of this size, so a Ray
            ``batch_size`` several times larger means less padding.
        confidences: also add each token's confidence (the tag's probability; with a CRF its
            marginal, a forward-backward pass that is skipped without them).
        device: ``"auto"`` (CUDA when the actor sees a GPU, else the CPU), ``"cpu"`` or
            ``"cuda"``.
        tags_column: the name of the new column of tags; must not be in the input.
        confidences_column: the name of the new column of confidences (``confidences=True``).

    Raises:
        ConfigError: an unknown ``device``, ``"cuda"`` without a visible GPU, or one name for
            both new columns; on a batch, a missing ``tokens_column``, or a new column's name
            already taken.
        TypeError: a batch of another type, or a row whose tokens are not a list of strings.
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
        table = _Batch.of(batch)
        self._check_columns(table.names)
        sentences = [
            _tokens(row, position, table, self.tokens_column)
            for position, row in enumerate(table.column(self.tokens_column))
        ]
        # Without confidences, tag() skips their work (a CRF's forward-backward pass).
        tagged = self.model.tag(
            sentences, batch_size=self.model_batch_size, confidences=self.confidences
        )
        if not self.confidences:
            return table.with_columns({self.tags_column: (tagged, "string")})
        added = {
            self.tags_column: ([[tag for tag, _ in sentence] for sentence in tagged], "string"),
            self.confidences_column: ([[p for _, p in sentence] for sentence in tagged], "float64"),
        }
        return table.with_columns(added)

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
                    f"RayTagger: the batch already has a column {name!r}; give the new column "
                    "another name (tags_column=..., confidences_column=...) to keep both"
                )


class _Batch:
    """One interface over Ray's three batch formats: column names, a column's rows, adding."""

    def __init__(self, batch: Any, kind: Literal["numpy", "pandas", "pyarrow"]) -> None:
        self.batch = batch
        self.kind = kind

    @classmethod
    def of(cls, batch: Any) -> _Batch:
        if isinstance(batch, Mapping):
            return cls(batch, "numpy")
        module = type(batch).__module__.split(".")[0]
        if module == "pyarrow" and hasattr(batch, "append_column"):
            return cls(batch, "pyarrow")
        if module == "pandas" and hasattr(batch, "assign"):
            return cls(batch, "pandas")
        raise TypeError(
            f"RayTagger got a batch of type {type(batch).__name__}; call map_batches with "
            "batch_format='pyarrow', 'numpy' (Ray's default) or 'pandas'"
        )

    @property
    def names(self) -> list[str]:
        if self.kind == "pyarrow":
            return list(self.batch.column_names)
        if self.kind == "pandas":
            return [str(name) for name in self.batch.columns]
        return list(self.batch)

    def column(self, name: str) -> Any:
        """The column's rows, as something to iterate over."""
        if self.kind == "pyarrow":
            return self.batch.column(name).to_pylist()
        return self.batch[name]

    def value(self, name: str, position: int) -> Any:
        if self.kind == "pyarrow":
            return self.batch.column(name)[position].as_py()
        if self.kind == "pandas":
            return self.batch[name].iloc[position]
        return self.batch[name][position]

    def with_columns(self, added: dict[str, tuple[list[list[Any]], str]]) -> Any:
        """A new batch of the same format with ``added`` (name: rows, Arrow item type).

        New because Ray's input batches may be read-only.
        """
        if self.kind == "pyarrow":
            import pyarrow

            table = self.batch
            for name, (rows, item) in added.items():
                # Typed, so that a batch of empty sentences is not list<null>.
                kind = pyarrow.list_(pyarrow.type_for_alias(item))
                table = table.append_column(name, pyarrow.array(rows, type=kind))
            return table
        if self.kind == "pandas":
            return self.batch.assign(**{name: rows for name, (rows, _) in added.items()})
        columns = {name: _as_lists(values) for name, values in self.batch.items()}
        return {**columns, **{name: _object_array(rows) for name, (rows, _) in added.items()}}


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


def _tokens(row: Any, position: int, table: _Batch, column: str) -> list[str]:
    """One row's tokens as a list of strings, or an error that says which row and why: a
    TypeError for what is not a list of strings, a ValueError for a token no reader takes."""
    error: type[Exception] = TypeError
    if (isinstance(row, np.ndarray) and row.ndim == 1) or isinstance(row, (list, tuple)):
        tokens = list(row)
        bad = next((i for i, token in enumerate(tokens) if not isinstance(token, str)), None)
        if bad is None:
            tokens = [str(token) for token in tokens]  # numpy.str_ -> str
            refused = first_token_problem(tokens)  # the readers' and tag()'s rule
            if refused is None:
                return tokens
            problem, error = f"its token {refused[0] - 1} {refused[1]}", ValueError
        else:
            problem = f"its token {bad} is {_short(tokens[bad])} ({type(tokens[bad]).__name__})"
    else:
        problem = f"it holds {_short(row)} ({type(row).__name__})"
        if isinstance(row, str):
            problem += "; split each sentence into tokens first"
    others = [name for name in table.names if name != column][:4]
    where = ", ".join(f"{name}={_short(table.value(name, position))}" for name in others)
    raise error(
        f"RayTagger: row {position} of the batch ({where or 'no other columns'}): "
        f"{column!r} must be a list of token strings, but {problem}"
    )


def _short(value: Any, limit: int = 60) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_lists(values: Any) -> Any:
    """A numpy column, with arrays inside an object column turned back into lists.

    Ray gives an Arrow list column to a numpy batch as an object array of arrays, and stores
    such an array as pickled Python objects; an object array of lists it stores as a list
    column again, of the type the column had.
    """
    if not (isinstance(values, np.ndarray) and values.dtype == object):
        return values
    if not any(isinstance(value, np.ndarray) for value in values):
        return values
    return _object_array([v.tolist() if isinstance(v, np.ndarray) else v for v in values])


def _object_array(rows: list[Any]) -> np.ndarray:
    """A 1-d object array of ``rows``, even when they are lists of one length."""
    array = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        array[i] = row
    return array
