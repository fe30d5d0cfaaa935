"""Evaluation metrics as torchmetrics ``Metric``s: token accuracy and conlleval-exact span F1.

Imports :mod:`seqtag.data` (schemes, batch fields); no Lightning.
"""
