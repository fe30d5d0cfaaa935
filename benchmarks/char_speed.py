"""Tagging speed of character models: per word occurrence, per word type, and with the cache.

    python benchmarks/char_speed.py --ckpt_path runs/ud_ewt_upos/checkpoints/best.ckpt \\
        [--word-ckpt WORD_ONLY.ckpt] [--spacy /work/spacyenv/bin/python] [--rounds 3]

``SequenceTagger.tag()`` on the EWT training text (204,577 tokens, batches of 256), in one
process, each variant measured ``--rounds`` times in turn (the best round counts, after one
warm-up pass), so all ratios come from one run on one machine:

- ``per_token``: the character encoder runs once per word occurrence (the code before word
  types; ``per_type = False``);
- ``per_type``: each distinct spelling of a batch once, gathered back to its tokens (no cache);
- ``per_type_cache``: the same with the bounded cache of features across batches (the default;
  emptied before each round, so the round pays for filling it);
- ``per_type_cache_warm``: a second pass over the text with that cache kept, as a corpus much
  larger than the cache's 50,000 spellings meets it after its first pages;
- with ``--word-ckpt``, a word-only model for the same text;
- with ``--spacy PYTHON``, spaCy's efficiency tagger on the same text, run by
  ``benchmarks/spacy_baseline.py speed`` in its own environment.

All variants tag identically (``per_type`` is checked tag for tag against ``per_token``).
Prints a table and writes ``benchmarks/char_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
EWT_TRAIN = REPO / ".." / "shared" / "data" / "ud_en_ewt" / "en_ewt-ud-train.conllu"


def _sentences(path: Path) -> list[list[str]]:
    from seqtag.data.io.formats import read_conllu

    return [list(sentence.tokens) for sentence in read_conllu(path)]


def _rate(model, sentences: list[list[str]], batch_size: int) -> tuple[float, list]:
    tokens = sum(len(s) for s in sentences)
    start = time.perf_counter()
    tagged = model.tag(sentences, batch_size=batch_size)
    return tokens / (time.perf_counter() - start), tagged


def _char_encoder(model):
    encoder = model.tagger.encoder.char_encoder
    if encoder is None:
        raise SystemExit("--ckpt_path must be a model with character features")
    return encoder


def _set_variant(model, variant: str, cache_size: int) -> None:
    encoder = _char_encoder(model)
    encoder.per_type = variant != "per_token"
    encoder.type_cache.clear()
    encoder.type_cache.max_size = cache_size if variant == "per_type_cache" else 0


def _spacy(python: Path, sentences: list[list[str]], batch_size: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        text = Path(folder) / "sentences.txt"
        text.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
        out = Path(folder) / "speed.json"
        command = [str(python), str(REPO / "benchmarks" / "spacy_baseline.py"), "speed"]
        command += ["--input", str(text), "--batch-size", str(batch_size), "--json", str(out)]
        subprocess.run(command, check=True, capture_output=True)
        return json.loads(out.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", type=Path, required=True, help="a character model")
    parser.add_argument("--word-ckpt", type=Path, help="a word-only model, for comparison")
    parser.add_argument("--spacy", type=Path, help="python of spaCy's venv")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "char_speed.json")
    args = parser.parse_args()
    if not EWT_TRAIN.is_file():
        raise SystemExit(f"{EWT_TRAIN}: missing (see ../shared/data/README.md)")

    from seqtag import SequenceTagger

    sentences = _sentences(EWT_TRAIN)
    model = SequenceTagger.load_from_checkpoint(args.ckpt_path, map_location="cpu").eval()
    cache_size = _char_encoder(model).type_cache.max_size
    word_model = None
    if args.word_ckpt:
        word_model = SequenceTagger.load_from_checkpoint(args.word_ckpt, map_location="cpu")
        word_model.eval()
    variants = ["per_token", "per_type", "per_type_cache"]
    rates: dict[str, float] = {}
    reference = None
    _set_variant(model, "per_type", cache_size)
    _rate(model, sentences[:2000], args.batch_size)  # warm-up
    for _ in range(args.rounds):
        for variant in variants:
            _set_variant(model, variant, cache_size)
            rate, tagged = _rate(model, sentences, args.batch_size)
            rates[variant] = max(rates.get(variant, 0.0), rate)
            tags = [[tag for tag, _ in sentence] for sentence in tagged]
            if reference is None:
                reference = tags
            elif tags != reference:
                raise SystemExit(f"{variant} tags differently from per_token")
        rate, tagged = _rate(model, sentences, args.batch_size)  # the cache kept from above
        rates["per_type_cache_warm"] = max(rates.get("per_type_cache_warm", 0.0), rate)
        if [[tag for tag, _ in sentence] for sentence in tagged] != reference:
            raise SystemExit("per_type_cache_warm tags differently from per_token")
        if word_model is not None:
            rate, _ = _rate(word_model, sentences, args.batch_size)
            rates["word_only"] = max(rates.get("word_only", 0.0), rate)
    result: dict = {
        "checkpoint": str(args.ckpt_path),
        "word_checkpoint": str(args.word_ckpt) if args.word_ckpt else None,
        "sentences": len(sentences),
        "tokens": sum(len(s) for s in sentences),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "tokens_per_s": {name: round(rate) for name, rate in rates.items()},
        "ratios": {
            "per_type_over_per_token": round(rates["per_type"] / rates["per_token"], 2),
            "per_type_cache_over_per_token": round(rates["per_type_cache"] / rates["per_token"], 2),
            "per_type_cache_warm_over_per_token": round(
                rates["per_type_cache_warm"] / rates["per_token"], 2
            ),
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "date": date.today().isoformat(),
            "command": " ".join(sys.argv),
        },
    }
    if args.spacy:
        spacy = _spacy(args.spacy, sentences, 1000)
        result["spacy"] = spacy
        spacy_rate = spacy["tokens_per_second"]
        for name, rate in rates.items():
            result["ratios"][f"{name}_over_spacy"] = round(rate / spacy_rate, 2)
    args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"tag() on {result['tokens']:,} tokens, batch {args.batch_size}, best of {args.rounds}:")
    for name, rate in rates.items():
        print(f"  {name:15} {rate:10,.0f} tokens/s")
    if args.spacy:
        print(f"  {'spaCy':15} {result['spacy']['tokens_per_second']:10,.0f} tokens/s")
    for name, ratio in result["ratios"].items():
        print(f"  {name}: {ratio}x")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
