"""Tagging: batched inference, output formats, the streaming prediction writer with exact
resume, and the most-uncertain sentences.

Imports :mod:`seqtag.data`, :mod:`seqtag.models`, :mod:`seqtag.files`; not the training system.
"""
