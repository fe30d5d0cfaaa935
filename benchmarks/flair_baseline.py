"""The peer to beat: flair 0.15.1's SequenceTagger on the same data, vectors and architecture.

Runs in a separate virtual environment that has flair (never seqtag's: flair pins its own
dependencies, and seqtag must not depend on it)::

    python3 -m venv /work/flairenv
    /work/flairenv/bin/pip install torch==2.13.0   # first: the CPU wheel on the project's machines
    /work/flairenv/bin/pip install "flair[word-embeddings]==0.15.1"
    /work/flairenv/bin/python benchmarks/flair_baseline.py speed --decoder crf
    /work/flairenv/bin/python benchmarks/flair_baseline.py quality --task conll2000 --seed 1
    /work/flairenv/bin/python benchmarks/flair_baseline.py train-model --decoder softmax --epochs 2
    /work/flairenv/bin/python benchmarks/flair_baseline.py tag --input sentences.txt \\
        --json /tmp/flair_tag.json [--tags tagged.tsv]

(``/tmp/flairenv`` in older notes is the same environment in another place.)

``speed`` mirrors ``benchmarks/run.py`` for one decoder: one training epoch on EWT UPOS timed
between flair's ``before_training_epoch`` and ``after_training_epoch`` events (flair's own
``ModelTrainer``, so its data handling is part of the cost, as for a flair user), then
``SequenceTagger.predict`` on the test set at batch 256, and the process's peak RSS.
``train-model`` trains a tagger on EWT UPOS as ``speed`` does (same corpus, vectors and
architecture; default softmax, 2 epochs, flair's SGD at 0.1) and saves it, outside the
repository, to ``--model`` (default ``/work/flairenv/models/ewt_upos_softmax.pt``); it is only
meant for ``tag``'s speed measurement, not for a quality number. ``tag`` loads that model and
tags a plain-text file, one sentence per line with tokens separated by spaces, on gold tokens
(``Sentence(line.split())``, a list of strings, so flair does not tokenize), with
``SequenceTagger.predict(sentences, mini_batch_size=256)``. The file is read in slices of
``--slice-sentences`` (default 10,000) lines: ``predict`` takes a list, links its sentences as
each other's context, sorts the whole list by length, and leaves its labels on the ``Sentence``
objects (heavy Python objects: a ``Token`` with its own label dictionaries per word), so a
flair user tags a large file slice by slice rather than as one list; each slice's sentences
are dropped after its tags are written. Reports wall time from opening the file to the last
tag written (reading, building ``Sentence`` objects and writing included; the time inside
``predict`` alone is ``predict_seconds``), tokens/s and the process's peak RSS, as JSON
(``--json``/``--output``; ``--tags PATH`` writes ``token<TAB>tag`` lines, a blank line after
each sentence).
``quality`` trains for the task's epochs with flair's default recipe (SGD at 0.1, annealed on
the dev score) and reports the test score: accuracy for UPOS, span F1 for chunking and NER,
from flair's own evaluation. ``--optimizer adam`` trains with seqtag's optimizer instead (Adam
at 0.002, still annealed on the dev score by flair): on CoNLL-2002, where there are no
pretrained vectors and the word embeddings start from random, flair's SGD recipe had reached
only 0.22 dev F1 after 10 of its 20 epochs.

The architecture follows seqtag's configs: the shared 100-d word2vec vectors fine-tuned
(English tasks only), a 1-layer BiLSTM of 256 units per direction, softmax or CRF, and for the
character variants flair's character BiLSTM (``CharacterEmbeddings``: 25-d characters, 25
units per direction, as in seqtag's ``char_features: lstm``). ``reproject_embeddings`` is off,
so no extra linear layer sits between embeddings and RNN; flair's own dropouts (word 0.05,
locked 0.5) are left at their defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/run.py only needs the standard library at import time, so flair's venv can share
# its measurements.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import import_floor_mib, peak_rss_mib

FLAIR_IMPORTS = "import torch, flair, flair.models, flair.trainers"

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"
VECTORS = DATA / "embeddings" / "w2v-en-100d.bin"

#: task -> (files (train, dev, test), token column, tag column, reader, English?, epochs)
TASKS = {
    "ewt_upos": {
        "files": [
            "ud_en_ewt/en_ewt-ud-train.conllu",
            "ud_en_ewt/en_ewt-ud-dev.conllu",
            "ud_en_ewt/en_ewt-ud-test.conllu",
        ],
        "reader": "conllu",
        "english": True,
        "epochs": 10,
        "span": False,
    },
    "conll2000": {
        "files": ["conll2000/train.txt", None, "conll2000/test.txt"],
        "reader": "columns",
        "english": True,
        "epochs": 15,
        "span": True,
        "val_from_train": 1000,
    },
    "conll2002_es": {
        "files": ["conll2002/esp.train", "conll2002/esp.testa", "conll2002/esp.testb"],
        "reader": "columns",
        "english": False,
        "epochs": 20,
        "span": True,
    },
    "conll2002_nl": {
        "files": ["conll2002/ned.train", "conll2002/ned.testa", "conll2002/ned.testb"],
        "reader": "columns",
        "english": False,
        "epochs": 20,
        "span": True,
    },
}


def read_sentences(path: Path, reader: str) -> list[list[tuple[str, str]]]:
    """(token, tag) pairs per sentence: UPOS of CoNLL-U words, or first and last column."""
    sentences, current = [], []
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            line = line.rstrip("\n")
            if not line.strip():
                if current:
                    sentences.append(current)
                current = []
                continue
            if reader == "conllu":
                if line.startswith("#"):
                    continue
                fields = line.split("\t")
                if "-" in fields[0] or "." in fields[0]:
                    continue  # multiword tokens and empty nodes are not tagged
                current.append((fields[1], fields[3]))
            else:
                fields = line.split()
                if fields[0] == "-DOCSTART-":
                    continue
                current.append((fields[0], fields[-1]))
    if current:
        sentences.append(current)
    return sentences


def write_columns(sentences: list[list[tuple[str, str]]], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        for sentence in sentences:
            for token, tag in sentence:
                stream.write(f"{token}\t{tag}\n")  # EWT has tokens with spaces
            stream.write("\n")


def build_corpus(task: str, folder: Path, train_limit: int | None = None):
    """Write the task's splits as 2-column files and read them with flair's ColumnCorpus."""
    from flair.datasets import ColumnCorpus

    spec = TASKS[task]
    train_file, dev_file, test_file = (DATA / f if f else None for f in spec["files"])
    train = read_sentences(train_file, spec["reader"])
    if spec.get("val_from_train"):
        dev = train[-spec["val_from_train"] :]
        train = train[: -spec["val_from_train"]]
    else:
        dev = read_sentences(dev_file, spec["reader"])
    if train_limit:
        train = train[:train_limit]
    test = read_sentences(test_file, spec["reader"])
    for name, sentences in (("train", train), ("dev", dev), ("test", test)):
        write_columns(sentences, folder / f"{name}.txt")
    return ColumnCorpus(
        folder,
        {0: "text", 1: "tag"},
        train_file="train.txt",
        dev_file="dev.txt",
        test_file="test.txt",
        column_delimiter="\t",
    )


def build_tagger(corpus, task: str, decoder: str, chars: str, hidden_size: int):
    from flair.embeddings import CharacterEmbeddings, StackedEmbeddings, WordEmbeddings
    from flair.models import SequenceTagger

    spec = TASKS[task]
    embeddings = []
    if spec["english"]:
        embeddings.append(WordEmbeddings(str(VECTORS), fine_tune=True))
    else:
        # No vectors for Spanish and Dutch: a trainable table over the training words, as
        # seqtag does (flair's OneHotEmbeddings with 100 dimensions).
        from flair.embeddings import OneHotEmbeddings

        embeddings.append(OneHotEmbeddings.from_corpus(corpus, embedding_length=100))
    if chars == "lstm":
        # flair's default character dictionary is a download; build it from the training
        # text instead, as seqtag does (with an unknown entry for unseen characters).
        from flair.data import Dictionary

        characters = Dictionary(add_unk=True)
        for sentence in corpus.train:
            for token in sentence:
                for character in token.text:
                    characters.add_item(character)
        embeddings.append(CharacterEmbeddings(path_to_char_dict=characters))
    stacked = embeddings[0] if len(embeddings) == 1 else StackedEmbeddings(embeddings)
    # Unknown entry: a tag that only dev or test have must not stop evaluation.
    dictionary = corpus.make_label_dictionary("tag", add_unk=True)
    return SequenceTagger(
        embeddings=stacked,
        tag_dictionary=dictionary,
        tag_type="tag",
        hidden_size=hidden_size,
        rnn_layers=1,
        use_crf=decoder == "crf",
        reproject_embeddings=False,
    )


def run_speed(args: argparse.Namespace) -> dict:
    import flair
    import torch
    from flair.trainers import ModelTrainer
    from flair.trainers.plugins.base import TrainerPlugin

    flair.set_seed(args.seed)
    epochs: list[dict] = []

    class EpochClock(TrainerPlugin):
        @TrainerPlugin.hook
        def before_training_epoch(self, epoch: int, **_: object) -> None:
            self.start = time.perf_counter()

        @TrainerPlugin.hook
        def after_training_epoch(self, epoch: int, **_: object) -> None:
            epochs.append({"epoch": epoch, "seconds": time.perf_counter() - self.start})

    with tempfile.TemporaryDirectory() as folder:
        corpus = build_corpus("ewt_upos", Path(folder), args.train_sentences)
        tagger = build_tagger(corpus, "ewt_upos", args.decoder, args.chars, args.hidden_size)
        train_tokens = sum(len(s) for s in corpus.train)
        ModelTrainer(tagger, corpus).train(
            Path(folder) / "model",
            learning_rate=0.1,
            mini_batch_size=32,
            max_epochs=args.epochs,
            plugins=[EpochClock()],
            save_final_model=False,
            create_file_logs=False,
            create_loss_file=False,
            use_final_model_for_eval=True,
        )
        test = list(corpus.test)
        test_tokens = sum(len(s) for s in test)
        for sentence in test:
            sentence.remove_labels("predicted")
        start = time.perf_counter()
        tagger.predict(test, mini_batch_size=256, label_name="predicted")
        tag_seconds = time.perf_counter() - start
        correct = sum(
            token.get_label("predicted").value == token.get_label("tag").value
            for sentence in test
            for token in sentence
        )
    last = epochs[-1]
    peak = peak_rss_mib()
    floor = import_floor_mib(FLAIR_IMPORTS)
    return {
        "tool": f"flair {flair.__version__}",
        "decoder": args.decoder,
        "chars": args.chars,
        "torch_num_threads": torch.get_num_threads(),
        "epochs": epochs,
        "train_epoch_tokens": train_tokens,
        "train_epoch_seconds": last["seconds"],
        "train_tokens_per_second": train_tokens / last["seconds"],
        "tag_tokens": test_tokens,
        "tag_seconds": tag_seconds,
        "tag_tokens_per_second": test_tokens / tag_seconds,
        "test_accuracy": correct / test_tokens,
        "peak_rss_mib": peak,
        "import_floor_rss_mib": floor,
        "peak_rss_mib_training_above_imports": peak - floor,
    }


def run_quality(args: argparse.Namespace) -> dict:
    import flair
    import torch
    from flair.trainers import ModelTrainer

    flair.set_seed(args.seed)
    spec = TASKS[args.task]
    epochs = args.epochs or spec["epochs"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        corpus = build_corpus(args.task, Path(folder), args.train_sentences)
        tagger = build_tagger(corpus, args.task, args.decoder, args.chars, args.hidden_size)
        # Model selection on dev, as seqtag does: flair keeps best-model.pt by the dev score.
        result = ModelTrainer(tagger, corpus).train(
            Path(folder) / "model",
            learning_rate=0.002 if args.optimizer == "adam" else 0.1,
            optimizer=torch.optim.Adam if args.optimizer == "adam" else torch.optim.SGD,
            mini_batch_size=32,
            max_epochs=epochs,
            create_file_logs=False,
            create_loss_file=False,
            main_evaluation_metric=("micro avg", "f1-score"),
        )
        # flair scores spans as conlleval does for BIO/BIOES labels (its "span" labels), and
        # micro-F1 over tokens equals accuracy for POS (one label per token, none missing).
        score = float(result["test_score"])
    return {
        "tool": f"flair {flair.__version__}",
        "task": args.task,
        "decoder": args.decoder,
        "chars": args.chars,
        "optimizer": args.optimizer,
        "seed": args.seed,
        "epochs": epochs,
        "metric": "span_f1" if spec["span"] else "accuracy",
        "test_score": score,
        "wall_seconds": time.perf_counter() - start,
        "peak_rss_mib": peak_rss_mib(),
    }


DEFAULT_MODEL = Path("/work/flairenv/models/ewt_upos_softmax.pt")


def run_train_model(args: argparse.Namespace) -> dict:
    """Train a quick EWT UPOS tagger (for ``tag``'s speed measurement) and save it to --model."""
    import flair
    from flair.trainers import ModelTrainer

    flair.set_seed(args.seed)
    model = args.model or DEFAULT_MODEL
    model.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        corpus = build_corpus("ewt_upos", Path(folder), args.train_sentences)
        tagger = build_tagger(corpus, "ewt_upos", args.decoder, args.chars, args.hidden_size)
        result = ModelTrainer(tagger, corpus).train(
            Path(folder) / "model",
            learning_rate=0.1,
            mini_batch_size=32,
            max_epochs=args.epochs,
            save_final_model=False,
            create_file_logs=False,
            create_loss_file=False,
            use_final_model_for_eval=True,
        )
        tagger.save(model)
    return {
        "tool": f"flair {flair.__version__}",
        "model": str(model),
        "decoder": args.decoder,
        "chars": args.chars,
        "hidden_size": args.hidden_size,
        "epochs": args.epochs,
        "test_score": float(result["test_score"]),
        "wall_seconds": time.perf_counter() - start,
    }


def run_tag(args: argparse.Namespace) -> dict:
    """Tag a one-sentence-per-line text file slice by slice; time, tokens/s and peak RSS."""
    import flair
    import torch
    from flair.data import Sentence
    from flair.models import SequenceTagger

    model = args.model or DEFAULT_MODEL
    if not model.exists():
        print(
            f"no model at {model}: train one first with\n  {sys.executable} "
            f"{Path(__file__).relative_to(REPO)} train-model --model {model}",
            file=sys.stderr,
        )
        sys.exit(2)
    load_start = time.perf_counter()
    tagger = SequenceTagger.load(str(model))
    tagger.eval()
    load_seconds = time.perf_counter() - load_start
    label = tagger.tag_type
    sentences = tokens = 0
    predict_seconds = 0.0
    largest_slice_tokens = 0

    def tag_slice(batch: list[list[str]], out) -> None:
        nonlocal predict_seconds, largest_slice_tokens
        flair_sentences = [Sentence(words) for words in batch]
        begin = time.perf_counter()
        tagger.predict(flair_sentences, mini_batch_size=args.mini_batch_size, label_name=label)
        predict_seconds += time.perf_counter() - begin
        largest_slice_tokens = max(largest_slice_tokens, sum(len(w) for w in batch))
        if out:
            for sentence in flair_sentences:
                out.write(
                    "".join(f"{t.text}\t{t.get_label(label).value}\n" for t in sentence) + "\n"
                )

    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(args.tags, "w", encoding="utf-8")) if args.tags else None
        batch: list[list[str]] = []
        for line in stack.enter_context(open(args.input, encoding="utf-8")):
            words = line.split()
            if not words:
                continue
            batch.append(words)
            sentences += 1
            tokens += len(words)
            if len(batch) == args.slice_sentences:
                tag_slice(batch, out)
                batch = []
        if batch:
            tag_slice(batch, out)
    seconds = time.perf_counter() - start
    return {
        "tool": f"flair {flair.__version__}",
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "model": str(model),
        "decoder": "crf" if tagger.use_crf else "softmax",
        "input": str(args.input),
        "tags": str(args.tags) if args.tags else None,
        "mini_batch_size": args.mini_batch_size,
        "slice_sentences": args.slice_sentences,
        "largest_slice_tokens": largest_slice_tokens,
        "sentences": sentences,
        "tokens": tokens,
        "model_load_seconds": load_seconds,
        "wall_seconds": seconds,
        "tokens_per_second": tokens / seconds,
        "predict_seconds": predict_seconds,
        "predict_tokens_per_second": tokens / predict_seconds if predict_seconds else None,
        "peak_rss_mib": peak_vmhwm_mib(),
        "import_floor_rss_mib": import_floor_mib(FLAIR_IMPORTS),
        "load_average_after": os.getloadavg(),
    }


def peak_vmhwm_mib() -> float:
    """Peak resident memory of this process (``VmHWM`` of /proc/self/status), in MiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["speed", "quality", "train-model", "tag"])
    parser.add_argument("--task", choices=sorted(TASKS), default="ewt_upos")
    parser.add_argument(
        "--decoder", choices=["softmax", "crf"], default=None, help="crf (softmax for train-model)"
    )
    parser.add_argument("--chars", choices=["none", "lstm"], default="none")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-sentences", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", "--json", type=Path, default=None, help="write the JSON")
    parser.add_argument("--model", type=Path, default=None, help=f"default {DEFAULT_MODEL}")
    parser.add_argument(
        "--input", type=Path, help="tag: one sentence per line, tokens split by spaces"
    )
    parser.add_argument("--tags", type=Path, default=None, help="tag: write token<TAB>tag lines")
    parser.add_argument("--mini-batch-size", type=int, default=256)
    parser.add_argument("--slice-sentences", type=int, default=10_000)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.mode in ("speed", "quality"):
        args.decoder = args.decoder or "crf"
    if args.mode == "speed":
        args.epochs = args.epochs or 1
        result = run_speed(args)
    elif args.mode == "train-model":
        args.epochs = args.epochs or 2
        args.decoder = args.decoder or "softmax"
        result = run_train_model(args)
    elif args.mode == "tag":
        if args.input is None:
            parser.error("tag needs --input")
        result = run_tag(args)
    else:
        result = run_quality(args)
    result["threads_env"] = os.environ.get("OMP_NUM_THREADS")
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
