"""The training corpus cache: a corpus file's counts and encoded arrays, read once, then reused.

With ``data.corpus_cache`` on, a training corpus file is read in two streaming passes the first
time (counts for the vocabularies, then the encoding with them) and never held in memory as
sentences; afterwards a start-up reads neither. Two kinds of entries, each a folder:

- ``counts-*``: the corpus's :class:`~seqtag.data.counts.CorpusCounts` (JSON), and the
  sentences held out for validation (``data.val_from_train``), keyed by the file's content
  (SHA-256) and the reading options (format, columns, tag field, schemes, missing tag, the
  held-out count);
- ``encoded-*``: the training sentences as arrays on disk (:mod:`seqtag.data.mapped`),
  keyed as the counts and by a hash of the vocabularies (so a checkpoint's vocabularies, for a
  resume or fine-tuning, get their own entry).

Every entry is checked when it is opened (header fields and types, array dtypes, shapes,
offsets and id ranges); one that fails is discarded and rebuilt, with a log line, never used.
Entries are written as :mod:`seqtag.data.cache_files` writes (temporary folder, atomic rename),
so concurrent runs and the DDP processes of a machine are safe. Where:
``$SEQTAG_CACHE_DIR/corpora``, else ``~/.cache/seqtag/corpora``; a cache that is off or cannot
be written gives a warning, and training reads the corpus into memory as without the option.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from collections.abc import Callable, Mapping
from itertools import accumulate, chain
from pathlib import Path
from typing import Any

import numpy as np

from seqtag.data.cache_files import cache_dir, discard, fingerprint, publish, remove_stale_partials
from seqtag.data.counts import CorpusCounter, CorpusCounts
from seqtag.data.io.sentence import Sentence
from seqtag.data.mapped import MappedCorpus, NpyWriter, check_arrays, id_dtype, load_arrays
from seqtag.data.partial import GoldEncoder
from seqtag.data.splits import hold_out, scan_split, source_name
from seqtag.data.vocab import Vocabularies

log = logging.getLogger(__name__)

#: Bump when what is stored changes; older entries are then simply not found.
CACHE_VERSION = 1
KIND = "corpora"
_READING = ("format", "tag_field", "token_column", "tag_column")
_ARRAYS = ("offsets", "words", "tags")
_CHAR_ARRAYS = ("char_offsets", "chars")
_ALLOWED_ARRAYS = ("allowed_sentences", "allowed_offsets", "allowed")
_UNREADABLE = (OSError, EOFError, ValueError, RecursionError, KeyError, TypeError)


def vocabularies_hash(vocabularies: Vocabularies) -> str:
    """A SHA-256 hash of everything that decides how text becomes ids."""
    text = json.dumps(vocabularies.to_dict(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class CorpusCache:
    """One training corpus file read with one set of options, in the cache.

    Args:
        path: the training corpus file.
        options: the DataModule's settings (``format``, ``tag_field``, ``token_column``,
            ``tag_column`` and those :func:`~seqtag.data.splits.scan_split` reads).
        corpus_scheme: the scheme of the file's tags.
        train_scheme: the scheme the model trains in.
        missing_tag: the marker of unknown tags.
        held_out: the last sentences held out for validation (``data.val_from_train``).
        known_fingerprint: the file's SHA-256 if this process already read it.
    """

    def __init__(
        self,
        path: str | Path,
        options: Mapping[str, Any],
        *,
        corpus_scheme: str | None,
        train_scheme: str | None,
        missing_tag: str | None,
        held_out: int = 0,
        known_fingerprint: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.options = options
        self.corpus_scheme = corpus_scheme
        self.train_scheme = train_scheme
        self.missing_tag = missing_tag
        self.held_out = held_out
        self.folder = cache_dir(KIND)
        #: False once the cache could not be written: the caller reads the corpus instead.
        self.usable = self.folder is not None
        self.reading = {
            **{name: options[name] for name in _READING},
            "corpus_scheme": corpus_scheme,
            "train_scheme": train_scheme,
            "missing_tag": missing_tag,
            "val_from_train": held_out,
        }
        self._fingerprint = known_fingerprint

    @property
    def fingerprint(self) -> str:
        """The corpus file's SHA-256, read once per process."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.path)
        return self._fingerprint

    def _identity(self, **extra: Any) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "fingerprint": self.fingerprint,
            "reading": self.reading,
            **extra,
        }

    def _key(self, kind: str, identity: dict[str, Any]) -> str:
        text = json.dumps(identity, sort_keys=True)
        return f"{kind}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:32]}"

    def _scan(self, visit: Callable[[Sentence], object]) -> list[Sentence]:
        """Read the training file once, checked, handing ``visit`` each training sentence;
        the last ``held_out`` sentences are returned instead (kept back as they stream)."""
        tail: deque[Sentence] = deque()
        visited = 0

        def take(sentence: Sentence) -> None:
            nonlocal visited
            tail.append(sentence)
            if len(tail) > self.held_out:
                visit(tail.popleft())
                visited += 1

        scan_split("train", self.path, self.options, self.corpus_scheme, self.missing_tag, take)
        if self.held_out:
            if not visited:  # the refusal of an in-memory hold-out, and its message
                hold_out(list(tail), self.held_out, source_name("train", str(self.path)))
            log.info("holding out the last %d training sentences for validation", self.held_out)
        return list(tail)

    def _open_entry(self, entry: Path, what: str) -> dict[str, Any] | None:
        """An entry's header, or ``None`` (discarded, with a log line) if it cannot be read."""
        assert self.folder is not None
        remove_stale_partials(self.folder, "corpus")
        if not entry.is_dir():
            return None
        try:
            header = json.loads((entry / "header.json").read_text(encoding="utf-8"))
            if not isinstance(header, dict):
                raise ValueError("header.json is not an object")
            return header
        except _UNREADABLE as err:
            self._discard(entry, what, err)
            return None

    def _discard(self, entry: Path, what: str, problem: object) -> None:
        log.info(
            "rebuilding the corpus cache entry %s (%s) of %s: %s", entry, what, self.path, problem
        )
        discard(entry)

    # -- counts --------------------------------------------------------------------------
    def counts(self) -> tuple[CorpusCounts, list[Sentence]]:
        """The training sentences' counts and the held-out sentences: from the cache, or read
        from the file (and cached)."""
        identity = self._identity()
        entry = None if self.folder is None else self.folder / self._key("counts", identity)
        header = None if entry is None else self._open_entry(entry, "counts")
        if header is not None:
            try:
                if header.get("identity") != identity:
                    raise ValueError("it was made from another file or with other options")
                counts = CorpusCounts.from_dict(header.get("counts"))
                held = _held_sentences(header.get("held_out"), self.held_out)
                log.info("read the counts of %s from the corpus cache %s", self.path, entry)
                return counts, held
            except _UNREADABLE as err:
                self._discard(entry, "counts", err)
        counter = CorpusCounter(self.corpus_scheme, self.train_scheme, self.missing_tag)
        held = self._scan(counter.add)
        counts = counter.counts()
        if self.folder is not None:
            data = {
                "identity": identity,
                "counts": counts.to_dict(),
                "held_out": [[list(s.tokens), list(s.tags), s.line] for s in held],
            }

            def write(temporary: Path) -> None:
                (temporary / "header.json").write_text(json.dumps(data), encoding="utf-8")

            if publish(self.folder, self._key("counts", identity), write, "corpus") is None:
                self.usable = False
        return counts, held

    # -- encoded arrays --------------------------------------------------------------------
    def encoded(self, vocabularies: Vocabularies) -> MappedCorpus | None:
        """The training sentences encoded with ``vocabularies``, on disk: from the cache,
        or encoded from the file into it. ``None`` when the cache cannot be written."""
        if self.folder is None:
            return None
        identity = self._identity(vocabularies=vocabularies_hash(vocabularies))
        key = self._key("encoded", identity)
        for attempt in range(2):
            found = self._open_encoded(self.folder / key, identity, vocabularies)
            if found is not None or attempt:
                return found
            log.info("encoding %s into the corpus cache", self.path)
            if publish(self.folder, key, self._encoder(identity, vocabularies), "corpus") is None:
                self.usable = False
                return None
        return None

    def _open_encoded(
        self, entry: Path, identity: dict[str, Any], vocabularies: Vocabularies
    ) -> MappedCorpus | None:
        header = self._open_entry(entry, "encoded")
        if header is None:
            return None
        try:
            if header.get("identity") != identity:
                raise ValueError("it was made from another file, options or vocabularies")
            sentences, tokens, partial = (header.get(n) for n in ("sentences", "tokens", "partial"))
            if not all(type(n) is int and n >= 0 for n in (sentences, tokens, partial)):
                raise ValueError("header.json does not count sentences and tokens")
            names = list(_ARRAYS)
            if vocabularies.chars is not None:
                names += _CHAR_ARRAYS
            if partial:
                names += _ALLOWED_ARRAYS
            arrays = load_arrays(entry, names)
            check_arrays(
                arrays,
                sentences=sentences,
                tokens=tokens,
                num_words=len(vocabularies.words),
                num_tags=len(vocabularies.tags),
                num_chars=None if vocabularies.chars is None else len(vocabularies.chars),
                max_word_length=vocabularies.max_word_length,
            )
            if partial and len(arrays["allowed_sentences"]) != partial:
                raise ValueError("allowed_sentences do not count the partial sentences")
        except _UNREADABLE as err:
            self._discard(entry, "encoded", err)
            return None
        log.info("training on %s as encoded in the corpus cache %s", self.path, entry)
        return MappedCorpus(arrays)

    def _encoder(
        self, identity: dict[str, Any], vocabularies: Vocabularies
    ) -> Callable[[Path], None]:
        """What writes an encoded entry into a temporary folder (one pass over the file)."""

        def write(folder: Path) -> None:
            targets = GoldEncoder(vocabularies, self.missing_tag)
            offsets = NpyWriter(folder / "offsets.npy", np.int64)
            words = NpyWriter(folder / "words.npy", np.int32)
            tags = NpyWriter(folder / "tags.npy", id_dtype(len(vocabularies.tags)))
            offsets.extend([0])
            with_chars = vocabularies.chars is not None
            if with_chars:
                char_offsets = NpyWriter(folder / "char_offsets.npy", np.int64)
                chars = NpyWriter(folder / "chars.npy", id_dtype(len(vocabularies.chars)))
                char_offsets.extend([0])
            which = NpyWriter(folder / "allowed_sentences.npy", np.int64)
            rows = NpyWriter(folder / "allowed_offsets.npy", np.int64)
            allowed_rows = NpyWriter(folder / "allowed.npy", np.bool_, width=len(vocabularies.tags))
            rows.extend([0])
            done = {"sentences": 0, "tokens": 0, "chars": 0, "rows": 0}

            def visit(sentence: Sentence) -> None:
                tokens = sentence.tokens
                ids, allowed = targets(sentence.tags)
                words.extend(vocabularies.encode_words(tokens))
                tags.extend(ids.tolist())
                done["tokens"] += len(tokens)
                offsets.extend([done["tokens"]])
                if with_chars:
                    encoded = vocabularies.encode_chars(tokens)
                    chars.extend(list(chain.from_iterable(encoded)))
                    ends = accumulate(map(len, encoded), initial=done["chars"])
                    char_offsets.extend(list(ends)[1:])
                    done["chars"] += sum(map(len, encoded))
                if allowed is not None:
                    which.extend([done["sentences"]])
                    allowed_rows.extend(allowed)
                    done["rows"] += len(allowed)
                    rows.extend([done["rows"]])
                done["sentences"] += 1

            self._scan(visit)
            targets.refuse_unseen_in_training(str(self.path))
            writers = [offsets, words, tags, which, rows, allowed_rows]
            if with_chars:
                writers += [char_offsets, chars]
            for writer in writers:
                writer.close()
            if not which.rows:  # no partial sentence: no (empty, unmappable) arrays
                for name in _ALLOWED_ARRAYS:
                    (folder / f"{name}.npy").unlink()
            header = {
                "identity": identity,
                "sentences": done["sentences"],
                "tokens": done["tokens"],
                "partial": which.rows,
            }
            (folder / "header.json").write_text(json.dumps(header), encoding="utf-8")

        return write


def _held_sentences(data: Any, count: int) -> list[Sentence]:
    """The held-out sentences stored with the counts, checked."""
    if not isinstance(data, list) or len(data) != count:
        raise ValueError("the held-out sentences are not a list of the held-out count")
    held = []
    for item in data:
        if not (isinstance(item, list) and len(item) == 3):
            raise ValueError("a held-out sentence is not [tokens, tags, line]")
        tokens, tags, line = item
        if not (
            isinstance(tokens, list)
            and isinstance(tags, list)
            and tokens
            and len(tokens) == len(tags)
            and all(isinstance(x, str) and x for x in chain(tokens, tags))
            and type(line) is int
        ):
            raise ValueError("a held-out sentence does not have one tag per token")
        held.append(Sentence(tuple(tokens), tuple(tags), line))
    return held
