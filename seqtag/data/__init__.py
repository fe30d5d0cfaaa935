"""Corpora to batches: file formats (``io/``), pretrained vectors (``vectors/``), vocabularies,
tag schemes, batching and the :class:`~seqtag.data.datamodule.TaggingDataModule`.

Imports :mod:`seqtag.errors`, :mod:`seqtag.options` and :mod:`seqtag.files` only.
"""
