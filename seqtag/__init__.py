"""seqtag: BiRNN sequence taggers (POS, chunking, NER) for PyTorch Lightning.

The pieces most users import: :class:`SequenceTagger` (the LightningModule),
:class:`TaggingDataModule` (corpora to batches), and the plain ``nn.Module`` building blocks
:class:`BiRNNEncoder`, :class:`CRF` and :class:`Tagger` for models of one's own.
"""

from seqtag.data.datamodule import TaggingDataModule
from seqtag.data.vocab import Vocabularies, Vocabulary
from seqtag.errors import CheckpointError, CorpusFormatError, SeqtagError, VectorFormatError
from seqtag.models.crf import CRF
from seqtag.models.encoder import BiRNNEncoder
from seqtag.models.tagger import Tagger
from seqtag.module import SequenceTagger

__version__ = "0.1.0"

__all__ = [
    "CRF",
    "BiRNNEncoder",
    "CheckpointError",
    "CorpusFormatError",
    "SeqtagError",
    "SequenceTagger",
    "Tagger",
    "TaggingDataModule",
    "VectorFormatError",
    "Vocabularies",
    "Vocabulary",
    "__version__",
]
