"""seqtag inside other systems: ONNX/TorchScript export and Ray Data.

Imports :mod:`seqtag.training` and below; optional dependencies are imported where used.
"""
