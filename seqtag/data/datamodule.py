"""TaggingDataModule: corpus files in, length-bucketed padded batches out.

The DataModule reads the splits, builds the vocabularies from the training split and aligns the
pretrained vectors to them. Once a model has been trained, the model's vocabularies are the
truth: a model restored from a checkpoint hands them back to the DataModule
(:meth:`TaggingDataModule.use_vocabularies`), so evaluation encodes text exactly as training did
and never needs the training corpus or the vector file.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

import lightning.pytorch as pl
import numpy as np
from torch.utils.data import DataLoader

from seqtag.data.batching import (
    UNSEEN_TARGET,
    EncodedDataset,
    EncodedSentence,
    LengthBucketSampler,
    ResumableDataLoader,
    collate,
    encode_sentence,
)
from seqtag.data.formats import CorpusFormat, Sentence, read_corpus
from seqtag.data.schemes import convert_tags, normalize_scheme, validate_tags
from seqtag.data.vocab import Vocabularies, Vocabulary
from seqtag.errors import ConfigError, CorpusFormatError, TagSchemeError

log = logging.getLogger(__name__)

Split = Literal["train", "val", "test", "predict"]
SchemeName = Literal["iob1", "iob2", "bio", "bioes", "iobes"]


class TaggingDataModule(pl.LightningDataModule):
    """Reads tagged corpora and serves padded, length-bucketed batches.

    Args:
        train_path: training corpus (plain or ``.gz``).
        val_path: development corpus, used for model selection.
        test_path: test corpus.
        predict_path: text to tag; its gold tags, if any, are ignored.
        format: ``conllu``, ``columns`` (CoNLL-2000/2002/2003 whitespace columns) or ``text``
            (one sentence per line, tokens separated by spaces; prediction input only).
        predict_format: format of ``predict_path`` when it differs from ``format``.
        tag_field: which CoNLL-U column holds the tags.
        token_column: column of the token in ``columns`` files (negative counts from the end).
        tag_column: column of the tag in ``columns`` files.
        tag_scheme: chunk/entity scheme of the corpus (``iob1``, ``iob2``/``bio``,
            ``bioes``/``iobes``); leave unset for POS tags. Span tasks are scored with span F1.
        train_scheme: scheme to train in (default: the corpus scheme); predictions are
            converted back to the corpus scheme for scoring and output.
        batch_size: sentences per batch.
        max_batch_tokens: at most this many padded tokens (sentences x longest sentence) per
            training batch; sentences too long for a full batch are batched apart, in smaller
            batches. Bounds the memory of a step on corpora with document-length "sentences".
        num_workers: DataLoader worker processes.
        min_freq: training words seen fewer times are unknown, unless they have a vector.
        lowercase: lowercase words before lookup (characters keep their case).
        unknown_shapes: unknown words get one of several unknown entries by their shape
            (capitalised, all digits, punctuation, hyphenated, ...) instead of one for all;
            on EWT UPOS this lifted accuracy on unknown words markedly (see README).
        vectors: pretrained word vectors read with gensim.
        vectors_format: ``auto`` or a format of :func:`seqtag.data.embeddings.load_vectors`.
        vectors_cache: parse the vector file once and load it from seqtag's cache afterwards
            (see :mod:`seqtag.data.vector_cache`; ``SEQTAG_CACHE_DIR`` says where).
        vectors_top_k: also add the ``k`` most frequent words of the vector table to the
            vocabulary, so text unseen in every split still finds vectors at prediction time.
        char_vocabulary: build a character vocabulary (needed by character features).
        max_word_length: characters per word kept for character features.
        seed: seed of the batch shuffling (the same on every process).
        pool_size: batches per sorting pool of the length bucketing.
        val_from_train: hold out the last ``n`` training sentences as the validation split,
            for corpora without a development file (CoNLL-2000); ``val_path`` must be unset.
    """

    def __init__(
        self,
        train_path: str | None = None,
        val_path: str | None = None,
        test_path: str | None = None,
        predict_path: str | None = None,
        format: CorpusFormat = "conllu",
        predict_format: CorpusFormat | None = None,
        tag_field: Literal["upos", "xpos"] = "upos",
        token_column: int = 0,
        tag_column: int = -1,
        tag_scheme: SchemeName | None = None,
        train_scheme: SchemeName | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        max_batch_tokens: int | None = None,
        num_workers: int = 0,
        min_freq: int = 1,
        lowercase: bool = False,
        unknown_shapes: bool = True,
        vectors: str | None = None,
        vectors_format: str = "auto",
        vectors_cache: bool = True,
        vectors_top_k: int = 0,
        char_vocabulary: bool = False,
        max_word_length: int = 30,
        seed: int = 42,
        pool_size: int = 100,
        val_from_train: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.paths: dict[Split, str | None] = {
            "train": train_path,
            "val": val_path,
            "test": test_path,
            "predict": predict_path,
        }
        self.corpus_scheme = normalize_scheme(tag_scheme) if tag_scheme else None
        self.train_scheme = normalize_scheme(train_scheme) if train_scheme else self.corpus_scheme
        if self.train_scheme and not self.corpus_scheme:
            raise ConfigError(
                "data.train_scheme needs data.tag_scheme, the scheme of the corpus files"
            )
        if val_from_train and val_path:
            raise ConfigError("set either data.val_path or data.val_from_train, not both")
        self.vocabularies: Vocabularies | None = None
        #: Aligned embedding matrix [len(words), dim] for a model trained from scratch.
        self.embedding_matrix: np.ndarray | None = None
        #: Training frequency of every word id [len(words)], for rare-word dropout.
        self.word_counts: np.ndarray | None = None
        self._sentences: dict[Split, list[Sentence]] = {}

    # -- reading ---------------------------------------------------------------------------
    def sentences(self, split: Split) -> list[Sentence]:
        """The sentences of a split, read once."""
        held_out = self.hparams.val_from_train
        if held_out and split in ("train", "val") and split not in self._sentences:
            everything = self._read("train")
            if held_out >= len(everything):
                raise ConfigError(
                    f"data.val_from_train={held_out} leaves no training sentences: "
                    f"{self.paths['train']} has {len(everything)}"
                )
            self._sentences["train"] = everything[:-held_out]
            self._sentences["val"] = everything[-held_out:]
            log.info("holding out the last %d training sentences for validation", held_out)
        return self._read(split)

    def _read(self, split: Split) -> list[Sentence]:
        if split not in self._sentences:
            path = self.paths[split]
            if path is None:
                raise ConfigError(f"no {split} file: set data.{split}_path")
            hp = self.hparams
            fmt = (hp.predict_format or hp.format) if split == "predict" else hp.format
            sentences = read_corpus(
                path,
                fmt,
                tag_field=hp.tag_field,
                token_column=hp.token_column,
                tag_column=hp.tag_column,
                require_tags=split != "predict",
            )
            if self.corpus_scheme and split != "predict":
                for sentence in sentences:
                    try:
                        validate_tags(sentence.tags, self.corpus_scheme)
                    except TagSchemeError as err:
                        raise CorpusFormatError(
                            path, sentence.line, f"in the sentence starting on this line: {err}"
                        ) from None
            tokens = sum(len(s.tokens) for s in sentences)
            log.info(
                "%s: read %d sentences, %d tokens from %s", split, len(sentences), tokens, path
            )
            self._sentences[split] = sentences
        return self._sentences[split]

    def _train_tags(self, sentence: Sentence) -> Sequence[str]:
        if self.corpus_scheme and self.train_scheme != self.corpus_scheme:
            return convert_tags(sentence.tags, self.corpus_scheme, self.train_scheme)
        return sentence.tags

    # -- vocabularies ----------------------------------------------------------------------
    def build_vocabularies(self) -> Vocabularies:
        """Vocabularies from the training split, plus every word of any split with a vector."""
        from seqtag.data.embeddings import align_vectors, load_vectors, pretrained_words_in

        hp = self.hparams
        train = self.sentences("train")
        norm = str.lower if hp.lowercase else (lambda w: w)
        word_counts = Counter(norm(token) for s in train for token in s.tokens)
        tag_counts = Counter(tag for s in train for tag in self._train_tags(s))
        extra: set[str] = set()
        vectors = None
        if hp.vectors:
            vectors = load_vectors(hp.vectors, hp.vectors_format, cache=hp.vectors_cache)
            candidates = set(word_counts)
            for split in ("val", "test", "predict"):
                if self.paths[split]:
                    candidates.update(norm(t) for s in self.sentences(split) for t in s.tokens)
            extra = pretrained_words_in(vectors, candidates)
            if hp.vectors_top_k:
                extra.update(norm(w) for w in vectors.words[: hp.vectors_top_k])
        words = Vocabulary.from_counts(
            word_counts,
            min_freq=hp.min_freq,
            extra=extra,
            fallback=True,
            unknown_shapes=hp.unknown_shapes,
        )
        chars = None
        if hp.char_vocabulary:
            char_counts = Counter(c for s in train for token in s.tokens for c in token)
            chars = Vocabulary.from_counts(char_counts)
        vocabularies = Vocabularies(
            words=words,
            tags=Vocabulary(sorted(tag_counts), pad=None, unk=None),
            chars=chars,
            lowercase=hp.lowercase,
            tag_scheme=self.train_scheme,
            corpus_scheme=self.corpus_scheme,
            max_word_length=hp.max_word_length,
        )
        self.word_counts = np.array([word_counts.get(w, 0) for w in words.items], dtype=np.float32)
        if vectors is not None:
            self.embedding_matrix, _ = align_vectors(
                vectors,
                words.items,
                special=words.num_specials,
                word_counts=word_counts,
                seed=hp.seed,
            )
        log.info(
            "vocabularies: %d words, %d tags%s",
            len(words),
            len(vocabularies.tags),
            f", {len(chars)} characters" if chars else "",
        )
        return vocabularies

    def use_vocabularies(self, vocabularies: Vocabularies) -> None:
        """Encode with a trained model's vocabularies instead of building new ones."""
        if self.vocabularies is not None and self.vocabularies != vocabularies:
            self.embedding_matrix = None
        self.vocabularies = vocabularies

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.sentences("train")
            if self.paths["val"] or self.hparams.val_from_train:
                self.sentences("val")
            if self.vocabularies is None:
                self.vocabularies = self.build_vocabularies()

    # -- encoding and loaders ---------------------------------------------------------------
    def _require_vocabularies(self) -> Vocabularies:
        if self.vocabularies is None:
            raise ConfigError(
                "the data module has no vocabularies yet: train a model first, or evaluate with "
                "a checkpoint (--ckpt_path) whose vocabularies it then uses"
            )
        return self.vocabularies

    def encode(self, sentences: Iterable[Sentence], with_tags: bool) -> list[EncodedSentence]:
        """Turn sentences into ids; gold tags unseen in training become ``UNSEEN_TARGET``."""
        vocab = self._require_vocabularies()
        unseen: Counter[str] = Counter()
        encoded = []
        for i, sentence in enumerate(sentences):
            tags = gold = None
            if with_tags and sentence.tags is not None:
                gold = sentence.tags
                tag_strings = self._train_tags(sentence)
                tag_ids = []
                for tag in tag_strings:
                    tag_id = vocab.tags.lookup(tag)
                    if tag_id is None:
                        unseen[tag] += 1
                        tag_id = UNSEEN_TARGET
                    tag_ids.append(tag_id)
                tags = np.asarray(tag_ids, dtype=np.int64)
            encoded.append(encode_sentence(vocab, i, sentence.tokens, tags, gold))
        if unseen:
            listed = ", ".join(f"{tag} ({n})" for tag, n in unseen.most_common(10))
            log.warning(
                "%d gold tokens have tags never seen in training; they count as errors: %s",
                sum(unseen.values()),
                listed,
            )
        return encoded

    def _loader(self, split: Split, shuffle: bool) -> DataLoader:
        dataset = EncodedDataset(self.encode(self.sentences(split), with_tags=split != "predict"))
        hp = self.hparams
        sampler = LengthBucketSampler(
            dataset.lengths,
            hp.batch_size if shuffle else hp.eval_batch_size,
            shuffle=shuffle,
            seed=hp.seed,
            pool_size=hp.pool_size,
            max_tokens=hp.max_batch_tokens if shuffle else None,
        )
        if not shuffle and len(dataset) < sampler.num_replicas:
            # Lightning refuses a process without batches, and the others would wait for it.
            raise ConfigError(
                f"the {split} data has {len(dataset)} sentence(s) for {sampler.num_replicas} "
                "processes, which need one each: use fewer devices (--trainer.devices)"
            )
        # The training loader can resume mid-epoch from a checkpoint (see ResumableDataLoader).
        loader_class = ResumableDataLoader if shuffle else DataLoader
        return loader_class(
            dataset,
            sampler=sampler,
            batch_size=None,
            collate_fn=collate,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        if not (self.paths["val"] or self.hparams.val_from_train):
            return []
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)
