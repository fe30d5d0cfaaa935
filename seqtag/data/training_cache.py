"""How a TaggingDataModule uses the corpus cache for its training file (``data.corpus_cache``).

The DataModule asks for two things: the training split's counts (for its spec), and the
training sentences encoded with the vocabularies of the moment, on disk (for its
training loader). Both come from :class:`~seqtag.data.corpus_cache.CorpusCache`; this module
decides when the cache can serve (a training file on disk, a cache folder that is on and can
be written) and remembers, per DataModule, what it already opened. When the cache cannot
serve, it says why once and answers ``None``: the DataModule then reads the corpus into
memory as without the option, with the same results.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from seqtag.data.cache_files import cache_dir
from seqtag.data.corpus_cache import KIND, CorpusCache
from seqtag.data.counts import CorpusCounts
from seqtag.data.io.memory import is_in_memory
from seqtag.data.io.sentence import Sentence
from seqtag.data.mapped import MappedCorpus
from seqtag.data.vocab import Vocabularies

log = logging.getLogger(__name__)


class TrainingCache:
    """The corpus cache of one DataModule's training file (``None`` answers: not cached).

    Args:
        source: the training split (a path, or sentences in memory, which are not cached).
        options: the DataModule's settings.
        missing_tag: the marker of unknown tags.
    """

    def __init__(self, source: Any, options: Mapping[str, Any], missing_tag: str | None) -> None:
        self.source = source
        self.options = options
        self.missing_tag = missing_tag
        self._off = not self._servable()
        self._fingerprint: str | None = None
        self._counts: dict[tuple, tuple[CorpusCounts, list[Sentence]]] = {}
        self._mapped: tuple[Vocabularies, MappedCorpus] | None = None

    def _servable(self) -> bool:
        if not self.options["corpus_cache"] or self.source is None:
            return False
        if is_in_memory(self.source):
            reason = "the training sentences are held in memory, not in a file"
        elif not Path(self.source).is_file():  # stdin, a missing file: reading says what
            return False
        elif cache_dir(KIND) is None:
            reason = "SEQTAG_CACHE_DIR turns the caches off"
        else:
            return True
        log.warning("data.corpus_cache: %s; the training corpus is read into memory", reason)
        return False

    @property
    def active(self) -> bool:
        """Whether the cache serves the training split (it is on and has not failed)."""
        return not self._off

    def _cache(self, corpus_scheme: str | None, train_scheme: str | None) -> CorpusCache:
        cache = CorpusCache(
            self.source,
            self.options,
            corpus_scheme=corpus_scheme,
            train_scheme=train_scheme,
            missing_tag=self.missing_tag,
            held_out=self.options["val_from_train"],
            known_fingerprint=self._fingerprint,
        )
        self._fingerprint = cache.fingerprint
        return cache

    def counts(
        self, corpus_scheme: str | None, train_scheme: str | None
    ) -> tuple[CorpusCounts, list[Sentence]] | None:
        """The training split's counts and held-out sentences, or ``None`` when not cached."""
        if self._off:
            return None
        key = (corpus_scheme, train_scheme)
        if key not in self._counts:
            cache = self._cache(corpus_scheme, train_scheme)
            self._counts[key] = cache.counts()
            self._off = not cache.usable
        return self._counts[key]

    def mapped(
        self, vocabularies: Vocabularies, corpus_scheme: str | None, train_scheme: str | None
    ) -> MappedCorpus | None:
        """The training sentences encoded with ``vocabularies``, mapped; ``None`` when not
        cached (then the caller encodes them in memory)."""
        if self._off:
            return None
        if self._mapped is not None and self._mapped[0] is vocabularies:
            return self._mapped[1]
        cache = self._cache(corpus_scheme, train_scheme)
        mapped = cache.encoded(vocabularies)
        if mapped is None:
            self._off = True
            return None
        self._mapped = (vocabularies, mapped)
        return mapped
