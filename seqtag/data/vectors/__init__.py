"""Pretrained word vectors: the only gensim import, the vector cache, and how vocabulary words
find their vectors.

Imports :mod:`seqtag.errors` and :mod:`seqtag.data.vocab`.
"""
