"""Export a trained tagger to TorchScript or ONNX, to run without seqtag (or without Python).

``seqtag export --ckpt_path model.ckpt --format onnx --output tagger.onnx`` writes two files:

- ``tagger.onnx`` (or a TorchScript ``.pt`` with ``--format torchscript``): a graph from ids to
  the best tag ids. Inputs: ``words`` ``[B, T]`` int64 word ids, ``lengths`` ``[B]`` int64
  sentence lengths (each at least 1, at most ``T``) and, only for a model with character
  features, ``chars`` ``[B, T, C]`` int64 character ids (``C`` >= 1, padded with the
  character padding id 0). Output: ``tags`` ``[B, T]`` int64, the best tag of every token
  (softmax argmax, or the CRF's Viterbi path computed inside the graph); positions past a
  sentence's length hold -1.
- ``tagger.onnx.vocab.json``: the word, tag and character lists and the exact rules that turn
  tokens into ids (see :func:`export_vocabulary`), so that text can be encoded with a few lines
  of any language.

The exported graph is not the training network scripted as is: :class:`ExportedTagger` runs the
trained weights through export-friendly forward passes that give the same results (the character
encoders run on every word slot instead of selecting the real words with data-dependent
shapes, the character BiLSTM reverses each word within its length instead of packing, and
the Viterbi recursion is a scripted loop over time). Both formats come from one scripted
module: TorchScript saves it, and ONNX converts it with PyTorch's TorchScript-based exporter
(``dynamo=False``), which turns the Viterbi loops into ONNX ``Loop`` nodes, so batch size and
sentence length stay dynamic. ONNX export needs the ``onnx`` package (``pip install onnx``);
running the file needs only an ONNX runtime.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import sys
import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn

from seqtag.data.vocab import SHAPES, Vocabularies, shape_entry
from seqtag.errors import CheckpointError, SeqtagError
from seqtag.models.chars import CharBiLSTM, CharCNN
from seqtag.models.encoder import BiRNNEncoder
from seqtag.models.tagger import Tagger

__all__ = ["ExportedTagger", "export", "export_vocabulary", "main"]

log = logging.getLogger(__name__)

ExportFormat = Literal["onnx", "torchscript"]
FORMATS: tuple[str, ...] = ("onnx", "torchscript")
#: ONNX operator set of the exported graphs (onnxruntime >= 1.14 runs it).
ONNX_OPSET = 17
#: Version of the ``.vocab.json`` layout.
VOCAB_FORMAT_VERSION = 1

ENCODING_RULES = [
    "Sentences are lists of tokens; every sentence needs at least one token.",
    "Word id: if 'lowercase' is true, lowercase the token first (Python str.lower). Then look "
    "up, in this order, the first form found in 'words': the token itself, the token "
    "lowercased, the token with every ASCII digit 0-9 replaced by '0', the lowercased token "
    "with every digit replaced by '0'. If none is found and 'word_unknown_shapes' is null, use "
    "'word_unk_id'; otherwise use word_unknown_shapes[SHAPE], where SHAPE of the (lowercased, "
    "if 'lowercase') token is: 'punctuation' if it has no letter (str.isalpha per character) "
    "and no digit (str.isdigit), 'number' if digits but no letter, 'alphanumeric' if both; "
    "else a case part, 'lower' if str.islower(), 'upper' if str.isupper(), 'title' if the "
    "first character is upper case and no later one is, 'mixed' otherwise, followed by "
    "'-hyphen' if the token contains '-'. The id is the position in 'words'.",
    "Character ids (only when 'chars' is not null): take the original token (not lowercased); "
    "if it has more than 'max_word_length' characters (Unicode code points), keep the first "
    "max_word_length // 2 and the last max_word_length - max_word_length // 2. Each character "
    "is its position in 'chars', or 'char_unk_id' if absent; there is no other fallback.",
    "Batching: pad 'words' [B, T] with 'word_pad_id' to the longest sentence T; 'lengths' [B] "
    "holds each sentence's number of tokens; 'chars' [B, T, C] is padded with 'char_pad_id' to "
    "the longest word C (at least 1), characters left-aligned, padded word slots all padding.",
    "Output 'tags' [B, T]: tag ids into 'tags' for the first lengths[b] positions of row b, -1 "
    "after. They are in 'tag_scheme'; seqtag converts them to 'corpus_scheme' when the two "
    "differ (for example BIOES back to IOB1).",
]


# -- export-friendly modules --------------------------------------------------------------


def _reversal_index(lengths: Tensor, max_length: int) -> Tensor:
    """Positions [N, L] reversing each row within its length (as in seqtag.models.encoder)."""
    positions = torch.arange(max_length, device=lengths.device).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    return torch.where(positions < lengths, lengths - 1 - positions, positions)


class _BiLayer(nn.Module):
    """One layer of :class:`seqtag.models.encoder.BiRNN`: both directions over a batch."""

    def __init__(self, forward_rnn: nn.RNNBase, backward_rnn: nn.RNNBase) -> None:
        super().__init__()
        self.forward_rnn = forward_rnn
        self.backward_rnn = backward_rnn

    def forward(self, inputs: Tensor, index: Tensor) -> Tensor:
        ahead, _ = self.forward_rnn(inputs)
        gather = index.expand(-1, -1, inputs.size(2))
        behind, _ = self.backward_rnn(inputs.gather(1, gather))
        behind = behind.gather(1, index.expand(-1, -1, behind.size(2)))
        return torch.cat([ahead, behind], dim=-1)


class _CharCNN(nn.Module):
    """:class:`CharCNN` in evaluation mode, computed on every word slot.

    The original convolves only the real words, trimmed to the longest one; with a zero padding
    embedding and "same" zero padding of the convolution, padding characters change nothing
    at real positions, and real positions are the only ones that reach the max.
    """

    def __init__(self, source: CharCNN) -> None:
        super().__init__()
        self.embedding = source.embedding
        self.conv = source.conv
        self.padding_idx = source.padding_idx
        self.output_dim = source.output_dim

    def forward(self, chars: Tensor) -> Tensor:
        batch, seq_len, width = chars.size(0), chars.size(1), chars.size(2)
        flat = chars.reshape(batch * seq_len, width)  # [N, C]
        char_mask = flat != self.padding_idx  # [N, C]
        conv = self.conv(self.embedding(flat).transpose(1, 2))  # [N, F, C]
        conv = conv.masked_fill(~char_mask.unsqueeze(1), float("-inf"))
        features = conv.amax(dim=2)  # [N, F]; -inf for padded word slots
        real = char_mask.any(dim=1, keepdim=True)  # [N, 1]
        features = torch.where(real, features, torch.zeros_like(features))
        return features.reshape(batch, seq_len, self.output_dim)


def _single_direction(lstm: nn.LSTM, suffix: str) -> nn.LSTM:
    """A one-direction copy of one direction (``""`` or ``"_reverse"``) of a 1-layer LSTM."""
    single = nn.LSTM(lstm.input_size, lstm.hidden_size, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(single, name).copy_(getattr(lstm, name + suffix))
    return single


class _CharBiLSTM(nn.Module):
    """:class:`CharBiLSTM` in evaluation mode, computed on every word slot without packing.

    The forward state after a word's last character is the forward LSTM's output at position
    ``length - 1``; the backward state after its first character is the output at the same
    position of a forward run over the word reversed within its length.
    """

    def __init__(self, source: CharBiLSTM) -> None:
        super().__init__()
        self.embedding = source.embedding
        self.forward_lstm = _single_direction(source.lstm, "")
        self.backward_lstm = _single_direction(source.lstm, "_reverse")
        self.padding_idx = source.padding_idx
        self.output_dim = source.output_dim

    def forward(self, chars: Tensor) -> Tensor:
        batch, seq_len, width = chars.size(0), chars.size(1), chars.size(2)
        flat = chars.reshape(batch * seq_len, width)  # [N, C]
        char_mask = flat != self.padding_idx
        lengths = char_mask.long().sum(dim=1)  # [N]
        last = (lengths - 1).clamp(min=0).reshape(-1, 1, 1)  # [N, 1, 1]
        emb = self.embedding(flat)  # [N, C, E]
        ahead, _ = self.forward_lstm(emb)  # [N, C, H]
        index = _reversal_index(lengths, width).unsqueeze(2)  # [N, C, 1]
        behind, _ = self.backward_lstm(emb.gather(1, index.expand(-1, -1, emb.size(2))))
        hidden = ahead.size(2)
        features = torch.cat(
            [
                ahead.gather(1, last.expand(-1, 1, hidden)).squeeze(1),
                behind.gather(1, last.expand(-1, 1, hidden)).squeeze(1),
            ],
            dim=1,
        )  # [N, 2H]
        real = (lengths > 0).unsqueeze(1)
        features = torch.where(real, features, torch.zeros_like(features))
        return features.reshape(batch, seq_len, self.output_dim)


def viterbi(
    emissions: Tensor, lengths: Tensor, start: Tensor, transitions: Tensor, end: Tensor
) -> Tensor:
    """Best tag path [B, T] of a linear-chain CRF, -1 past each length; export-friendly.

    The same recursion as :meth:`seqtag.models.crf.CRF.decode` (which validates its inputs
    with host-side checks that neither TorchScript nor ONNX can hold), written so that
    ``torch.jit.script`` turns the two loops over time into graph loops.

    Args:
        emissions: [B, T, K] tag scores.
        lengths: [B] sentence lengths, each in [1, T].
        start: [K] start scores, forbidden starts already penalised.
        transitions: [K, K] scores from tag i (row) to tag j (column), likewise penalised.
        end: [K] end scores, likewise penalised.
    """
    emissions = emissions.float()
    batch, length, num_tags = emissions.size(0), emissions.size(1), emissions.size(2)
    mask = torch.arange(length, device=emissions.device).unsqueeze(0) < lengths.unsqueeze(1)
    trans_to_from = transitions.t().unsqueeze(0)  # [1, to, from]
    identity = torch.arange(num_tags, device=emissions.device).unsqueeze(0).expand(batch, -1)
    score = start.unsqueeze(0) + emissions[:, 0]  # [B, K]
    # Growing tensors rather than lists: onnxruntime's graph optimizer mis-handles the ONNX
    # sequences that the exporter makes of lists appended to in a loop.
    history = torch.zeros(0, batch, num_tags, dtype=torch.long, device=emissions.device)
    for t in range(1, length):
        best, prev = (score.unsqueeze(1) + trans_to_from).max(dim=2)  # [B, K], [B, K]
        step = mask[:, t].unsqueeze(1)  # [B, 1]
        score = torch.where(step, best + emissions[:, t], score)
        # On padding each tag points at itself, so backtracking walks through unchanged.
        history = torch.cat([history, torch.where(step, prev, identity).unsqueeze(0)], dim=0)
    last = (score + end.unsqueeze(0)).argmax(dim=1, keepdim=True)  # [B, 1]
    path = last  # grows leftwards to [B, T]
    for i in range(length - 1):
        last = history[length - 2 - i].gather(1, last)  # [B, 1]
        path = torch.cat([last, path], dim=1)
    return torch.where(mask, path, torch.full_like(path, -1))


class ExportedTagger(nn.Module):
    """A trained :class:`~seqtag.models.tagger.Tagger` as one scriptable inference module.

    ``forward(words [B, T], lengths [B], chars [B, T, C])`` returns the best tag ids [B, T]
    (-1 past each length). ``chars`` is ignored by a model without character features (give
    any ``[B, T, 1]`` tensor). Parameters are shared with ``tagger`` (a character BiLSTM's are
    copied, one direction per LSTM); ``tagger`` is not modified.
    """

    def __init__(self, tagger: Tagger) -> None:
        super().__init__()
        encoder: BiRNNEncoder = tagger.encoder
        self.embeddings = encoder.embeddings
        char_encoder = encoder.char_encoder
        self.has_chars = char_encoder is not None
        if char_encoder is None:
            self.char_encoder: nn.Module = nn.Identity()
        elif isinstance(char_encoder, CharCNN):
            self.char_encoder = _CharCNN(char_encoder)
        elif isinstance(char_encoder, CharBiLSTM):
            self.char_encoder = _CharBiLSTM(char_encoder)
        else:
            raise CheckpointError(f"cannot export character encoder {type(char_encoder)}")
        rnn = encoder.rnn
        self.layers = nn.ModuleList(
            _BiLayer(f, b) for f, b in zip(rnn.forward_layers, rnn.backward_layers, strict=True)
        )
        self.emission = tagger.emission
        self.has_crf = tagger.crf is not None
        num_tags = tagger.num_tags
        if tagger.crf is not None:
            with torch.no_grad():
                start, transitions, end = (s.detach().clone() for s in tagger.crf._scores())
        else:
            start, transitions = torch.zeros(num_tags), torch.zeros(num_tags, num_tags)
            end = torch.zeros(num_tags)
        self.register_buffer("start", start)
        self.register_buffer("transitions", transitions)
        self.register_buffer("end", end)

    def forward(self, words: Tensor, lengths: Tensor, chars: Tensor) -> Tensor:
        length = words.size(1)
        mask = torch.arange(length, device=words.device).unsqueeze(0) < lengths.unsqueeze(1)
        features = self.embeddings(words)
        if self.has_chars:
            features = torch.cat([features, self.char_encoder(chars)], dim=-1)
        index = _reversal_index(lengths, length).unsqueeze(2)  # [B, T, 1]
        for layer in self.layers:
            features = layer(features, index)
        features = features * mask.unsqueeze(2).to(features.dtype)
        emissions = self.emission(features)  # [B, T, K]
        if self.has_crf:
            return viterbi(emissions, lengths, self.start, self.transitions, self.end)
        best = emissions.float().softmax(dim=-1).argmax(dim=-1)
        return torch.where(mask, best, torch.full_like(best, -1))


class _WithoutChars(nn.Module):
    """Wraps :class:`ExportedTagger` for a model without character features: two inputs."""

    def __init__(self, tagger: ExportedTagger) -> None:
        super().__init__()
        self.tagger = tagger

    def forward(self, words: Tensor, lengths: Tensor) -> Tensor:
        chars = torch.zeros(words.size(0), words.size(1), 1, dtype=torch.long)
        return self.tagger(words, lengths, chars)


# -- vocabulary sidecar -------------------------------------------------------------------


def export_vocabulary(
    vocabularies: Vocabularies, decoder: str, model_format: str
) -> dict[str, Any]:
    """The ``.vocab.json`` content: everything needed to encode text and read the tags."""
    words, chars = vocabularies.words, vocabularies.chars
    inputs = ["words", "lengths"] + (["chars"] if chars is not None else [])
    return {
        "format": "seqtag-export",
        "format_version": VOCAB_FORMAT_VERSION,
        "model_format": model_format,
        "decoder": decoder,
        "inputs": inputs,
        "outputs": ["tags"],
        "words": list(words.items),
        "word_pad_id": words.pad_id,
        "word_unk_id": words.unk_id,
        "word_unknown_shapes": {shape: words.index(shape_entry(shape)) for shape in SHAPES}
        if words.unknown_shapes
        else None,
        "lowercase": vocabularies.lowercase,
        "word_fallback": ["exact", "lowercase", "digits", "lowercase+digits"]
        if words.fallback
        else ["exact"],
        "tags": list(vocabularies.tags.items),
        "tag_scheme": vocabularies.tag_scheme,
        "corpus_scheme": vocabularies.corpus_scheme,
        "chars": list(chars.items) if chars is not None else None,
        "char_pad_id": chars.pad_id if chars is not None else None,
        "char_unk_id": chars.unk_id if chars is not None else None,
        "max_word_length": vocabularies.max_word_length,
        "encoding": ENCODING_RULES,
    }


# -- export -------------------------------------------------------------------------------


def _example_inputs(has_chars: bool) -> tuple[Tensor, ...]:
    words = torch.tensor([[2, 3, 4], [2, 3, 0]], dtype=torch.long)
    lengths = torch.tensor([3, 2], dtype=torch.long)
    if not has_chars:
        return words, lengths
    chars = torch.tensor([[[2, 3], [2, 0], [3, 0]], [[2, 0], [3, 3], [0, 0]]], dtype=torch.long)
    return words, lengths, chars


def _export_onnx(module: nn.Module, has_chars: bool, output: str) -> None:
    try:
        import onnx  # noqa: F401  (the exporter and _forget_loop_shapes need it)
    except ImportError:
        raise SeqtagError("ONNX export needs the onnx package: pip install onnx") from None
    names = ["words", "lengths"] + (["chars"] if has_chars else [])
    dynamic_axes: dict[str, dict[int, str]] = {
        "words": {0: "batch", 1: "length"},
        "lengths": {0: "batch"},
        "tags": {0: "batch", 1: "length"},
    }
    if has_chars:
        dynamic_axes["chars"] = {0: "batch", 1: "length", 2: "word_length"}
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the torch.export-based one,
        # which needs onnxscript and the experimental scan operator for a loop over a dynamic
        # number of time steps; it says so at every call.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        torch.onnx.export(
            module,
            _example_inputs(has_chars),
            output,
            input_names=names,
            output_names=["tags"],
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    _forget_loop_shapes(output)


def _forget_loop_shapes(path: str) -> None:
    """Drop the sizes that the exporter wrote on ``Loop`` bodies' carried values.

    The exporter annotates a loop-carried tensor with the shape it had in the example run;
    for the Viterbi path, which grows by one column per step, onnxruntime then warns at every
    step that the actual shape differs. Without annotations it infers nothing and is silent.
    """
    import onnx

    model = onnx.load(path)
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type != onnx.AttributeProto.GRAPH:
                    continue
                body = attribute.g
                graphs.append(body)
                if node.op_type == "Loop":
                    # Inputs: iteration count, condition, carried values; outputs: condition,
                    # carried values. Keep the ranks, forget the sizes of the carried values.
                    for value in [*body.input[2:], *body.output[1:]]:
                        if value.type.HasField("tensor_type"):
                            for dim in value.type.tensor_type.shape.dim:
                                dim.Clear()
    onnx.checker.check_model(model)
    onnx.save(model, path)


def export(ckpt_path: str, format: ExportFormat, output: str) -> None:
    """Write the checkpoint's tagger as ``output`` and its vocabularies as ``output.vocab.json``.

    Args:
        ckpt_path: a seqtag checkpoint (``seqtag fit`` writes them).
        format: ``onnx`` (run with onnxruntime or any ONNX runtime) or ``torchscript`` (run with
            ``torch.jit.load``; needs torch but not seqtag).
        output: the model file to write; the vocabulary goes beside it.
    """
    from seqtag.module import SequenceTagger

    if format not in FORMATS:
        raise SeqtagError(f"unknown export format {format!r}; choose 'onnx' or 'torchscript'")
    if not os.path.isfile(ckpt_path):
        raise CheckpointError(f"{ckpt_path}: no such checkpoint file")
    try:
        model = SequenceTagger.load_from_checkpoint(ckpt_path, map_location="cpu")
    except (KeyError, EOFError, pickle.UnpicklingError, RuntimeError) as err:
        raise CheckpointError(f"{ckpt_path}: not a seqtag checkpoint ({err!r})") from err
    tagger, vocabularies = model._require_tagger(), model.vocabularies
    tagger.eval()
    exported = ExportedTagger(tagger).eval()
    module: nn.Module = exported if exported.has_chars else _WithoutChars(exported).eval()
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but it still saves, loads and
        # converts to ONNX a loop over a dynamic number of time steps (the Viterbi recursion).
        warnings.simplefilter("ignore", category=DeprecationWarning)
        scripted = torch.jit.script(module)
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    if format == "torchscript":
        scripted.save(output)
    else:
        _export_onnx(scripted, exported.has_chars, output)
    decoder = "crf" if exported.has_crf else "softmax"
    with open(output + ".vocab.json", "w", encoding="utf-8") as stream:
        json.dump(export_vocabulary(vocabularies, decoder, format), stream, ensure_ascii=False)
        stream.write("\n")
    log.info("wrote %s and %s.vocab.json", output, output)


def main(args: list[str] | None = None) -> None:
    """``seqtag export --ckpt_path P --format onnx|torchscript --output F``."""
    parser = argparse.ArgumentParser(
        prog="seqtag export",
        description="Export a trained tagger to ONNX or TorchScript, with its vocabulary as "
        "OUTPUT.vocab.json, to tag text without seqtag.",
    )
    parser.add_argument("--ckpt_path", required=True, help="seqtag checkpoint to export")
    parser.add_argument("--format", required=True, choices=FORMATS, help="model file format")
    parser.add_argument("--output", required=True, help="model file to write")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    options = parser.parse_args(args)
    debug = options.debug or os.environ.get("SEQTAG_DEBUG") == "1"
    try:
        export(options.ckpt_path, options.format, options.output)
    except SeqtagError as err:
        if debug:
            raise
        message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"seqtag: error: {message}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"wrote {options.output} and {options.output}.vocab.json")


if __name__ == "__main__":
    main()
