"""Confidence calibration: the temperature fit on a dev set, ECE and reliability bins, the
test-time calibration metric and reliability diagrams.

Imports :mod:`seqtag.data`, :mod:`seqtag.models`, :mod:`seqtag.metrics`, :mod:`seqtag.checkpoint`.
"""
