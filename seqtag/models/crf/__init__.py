"""The linear-chain CRF: the layer, its algorithms (forward, Viterbi, marginals), training from
partial labels, and span confidences.

Imports torch and :mod:`seqtag.data.schemes` only.
"""
