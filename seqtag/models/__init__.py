"""The math: plain ``torch.nn.Module``s (BiRNN encoder, character features, CRF, tagger).

Never imports Lightning, and of :mod:`seqtag.data` only public names (tag schemes); usable
without the rest of seqtag.
"""
