"""Rebuild the quick-start data in ``data/`` from the shared benchmark data.

Run from the project root::

    .venv/bin/python data/make_default_data.py [--shared ../shared/data]

It writes

* ``data/ud_en_ewt/en_ewt-ud-{train,dev,test}.conllu.gz`` and ``LICENSE.txt``: UD English EWT,
  gzip-compressed with a zero timestamp so that reruns give byte-identical files;
* ``data/vectors/w2v-en-100d-ewt.bin``: a word2vec binary subset of the shared 100-d vectors,
  small enough to ship (at most 8 MB): every entry that the exact/lowercase/digits fallback of
  :mod:`seqtag.data.vectors.embeddings` can reach from an EWT word, so EWT words get exactly the
  vectors the full table gives them, then the most frequent other words until the budget is
  used. Values are copied bit for bit (float32), in the order of the full table.

Only EWT may be copied into the project; the CoNLL-2000/2002 corpora stay in the shared folder.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout, without installing seqtag
    sys.path.insert(0, str(ROOT))

from seqtag.data.vectors.alignment import align_vectors  # noqa: E402
from seqtag.data.vectors.embeddings import PretrainedVectors, load_vectors  # noqa: E402
from seqtag.data.vocab import lookup_forms  # noqa: E402

SPLITS = ("train", "dev", "test")
CORPUS = "ud_en_ewt"
SOURCE_VECTORS = Path("embeddings") / "w2v-en-100d.bin"
VECTORS = Path("vectors") / "w2v-en-100d-ewt.bin"
MAX_BYTES = 8_000_000


def compress_corpus(shared: Path, out: Path) -> list[Path]:
    """gzip the three EWT splits (timestamp 0: reproducible bytes) and copy the licence."""
    target = out / CORPUS
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for split in SPLITS:
        source = shared / CORPUS / f"en_ewt-ud-{split}.conllu"
        destination = target / f"{source.name}.gz"
        with (
            source.open("rb") as plain,
            destination.open("wb") as raw,
            gzip.GzipFile(source.name, "wb", compresslevel=9, fileobj=raw, mtime=0) as packed,
        ):
            shutil.copyfileobj(plain, packed)
        written.append(destination)
    licence = target / "LICENSE.txt"
    shutil.copyfile(shared / CORPUS / "LICENSE.txt", licence)
    written.append(licence)
    return written


def read_forms(path: Path) -> Counter[str]:
    """Word forms of a CoNLL-U file, skipping multiword-token (``1-2``) and empty-node lines."""
    forms: Counter[str] = Counter()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            if not line.strip() or line.startswith("#"):
                continue
            columns = line.rstrip("\n").split("\t")
            if "-" in columns[0] or "." in columns[0]:
                continue
            forms[columns[1]] += 1
    return forms


def write_word2vec_binary(path: Path, words: list[str], matrix: np.ndarray) -> None:
    """The word2vec C tool's binary format, as gensim writes it (no newline after vectors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.ascontiguousarray(matrix, dtype="<f4")
    with path.open("wb") as out:
        out.write(f"{len(words)} {rows.shape[1]}\n".encode())
        for word, row in zip(words, rows, strict=True):
            out.write(word.encode("utf-8") + b" " + row.tobytes())


def compact_vectors(shared: Path, out: Path, forms: Counter[str], budget: int) -> Path:
    """Write the subset of the shared vectors that EWT needs, topped up by frequency."""
    full = load_vectors(shared / SOURCE_VECTORS, "word2vec-bin")
    entry_bytes = [len(word.encode("utf-8")) + 1 + 4 * full.dim for word in full.words]
    keep = {
        full.index[form] for word in forms for form, _ in lookup_forms(word) if form in full.index
    }
    size = len(f"{len(full.words)} {full.dim}\n") + sum(entry_bytes[i] for i in keep)
    required = len(keep)
    if size > MAX_BYTES:
        raise SystemExit(f"the EWT words alone need {size:,} bytes, more than {MAX_BYTES:,}")
    for row, entry in enumerate(entry_bytes):  # the table is sorted by frequency
        if row in keep:
            continue
        if size + entry > budget:
            break
        keep.add(row)
        size += entry
    rows = sorted(keep)
    path = out / VECTORS
    write_word2vec_binary(path, [full.words[i] for i in rows], full.matrix[rows])

    compact = load_vectors(path, "word2vec-bin")
    if not np.array_equal(compact.matrix, full.matrix[rows]):
        raise SystemExit(f"{path}: read back different values")
    differ = [w for w in forms if _found_word(full, w) != _found_word(compact, w)]
    if differ:
        raise SystemExit(f"{path}: lookup differs from the full table for {differ[:5]}")
    print(
        f"{path}: {len(rows):,} of {len(full.words):,} vectors ({required:,} reached from "
        f"EWT words, {len(rows) - required:,} most frequent others), "
        f"{path.stat().st_size:,} bytes"
    )
    for name, counts in (("EWT train", _forms_of(out, "train")), ("EWT all splits", forms)):
        for label, table in (("full table", full), ("compact", compact)):
            _, report = align_vectors(table, sorted(counts), special=0, word_counts=counts)
            print(f"  {name}, {label}: {report}")
    return path


def _found_word(vectors: PretrainedVectors, word: str) -> str | None:
    """The table entry the fallback lookup reaches from ``word``."""
    row, _ = vectors.find(word)
    return None if row is None else vectors.words[row]


def _forms_of(out: Path, split: str) -> Counter[str]:
    return read_forms(out / CORPUS / f"en_ewt-ud-{split}.conllu.gz")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "data")
    parser.add_argument(
        "--budget", type=int, default=7_500_000, help="bytes for the vector file (max 8 MB)"
    )
    args = parser.parse_args(argv)
    if args.budget > MAX_BYTES:
        parser.error(f"--budget must be at most {MAX_BYTES:,} bytes")
    shared = args.shared.resolve()
    for written in compress_corpus(shared, args.out):
        print(f"{written}: {written.stat().st_size:,} bytes")
    forms: Counter[str] = Counter()
    for split in SPLITS:
        forms += _forms_of(args.out, split)
    print(f"EWT: {sum(forms.values()):,} tokens, {len(forms):,} word types")
    compact_vectors(shared, args.out, forms, args.budget)


if __name__ == "__main__":
    main()
