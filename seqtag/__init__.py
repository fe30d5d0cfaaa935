"""seqtag: BiRNN sequence taggers (POS, chunking, NER) for PyTorch Lightning.

The pieces most users import: :class:`SequenceTagger` (the LightningModule),
:class:`TaggingDataModule` (corpora to batches), and the plain ``nn.Module`` building blocks
:class:`BiRNNEncoder` (or :class:`BiRNN` over features of your own), :class:`CRF` and
:class:`Tagger` for models of one's own; :class:`DataSpec` is what the DataModule hands the
model, and :class:`SeqtagCLI` the ``seqtag`` command's ``LightningCLI``.

Names are imported on first use, so ``import seqtag.data.io.formats`` stays free of torch and
Lightning start-up cost.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__version__ = "0.1.0"

#: Compiled oneDNN kernels kept for reuse (oneDNN's default is 1,024). PyTorch's CPU RNN
#: kernels come from oneDNN, which compiles and caches one per input shape; sentence lengths
#: change with every batch, so the cache only grows: it added 250 MiB to the resident memory of
#: 200 EWT training batches with character features, and a small cache ran as fast. Set
#: ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` yourself to choose another size; it must be set before
#: the process's first oneDNN kernel runs, hence here, on importing seqtag.
ONEDNN_CACHE_CAPACITY = "8"
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)

_EXPORTS = {
    "SequenceTagger": "seqtag.training.module",
    "in_input_order": "seqtag.prediction.inference",
    "PredictionOptions": "seqtag.prediction.inference",
    "TokenCollate": "seqtag.prediction.raw",
    "TaggingDataModule": "seqtag.data.datamodule",
    "DataSpec": "seqtag.data.spec",
    "SeqtagCLI": "seqtag.cli.main",
    "Vocabularies": "seqtag.data.vocab",
    "Vocabulary": "seqtag.data.vocab",
    "BiRNNEncoder": "seqtag.models.encoder",
    "BiRNN": "seqtag.models.encoder",
    "CRF": "seqtag.models.crf.layer",
    "Tagger": "seqtag.models.tagger",
    "CharCNN": "seqtag.models.chars",
    "CharBiLSTM": "seqtag.models.chars",
    "SpanF1": "seqtag.metrics.span_f1",
    "TokenAccuracy": "seqtag.metrics.span_f1",
    "PredictionWriter": "seqtag.prediction.writer",
    "TemperatureCalibration": "seqtag.calibration.temperature",
    "ReliabilityDiagram": "seqtag.calibration.reliability",
    "ConfusionMatrixPlot": "seqtag.training.reports",
    "ThreadPolicy": "seqtag.runtime.thread_policy",
    "SeqtagError": "seqtag.errors",
    "CorpusFormatError": "seqtag.errors",
    "VectorFormatError": "seqtag.errors",
    "TagSchemeError": "seqtag.errors",
    "CheckpointError": "seqtag.errors",
    "ConfigError": "seqtag.errors",
    "CommandLineError": "seqtag.errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'seqtag' has no attribute {name!r}")
