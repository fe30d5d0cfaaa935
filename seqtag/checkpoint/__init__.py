"""Checkpoints: the one reader (validated plain data) and the atomic writer, the schema, and
what exact resume needs (RNG state, pending validation, the run's own folder).

Imports :mod:`seqtag.data` (vocabularies, schemes), :mod:`seqtag.files` and Lightning.
"""
