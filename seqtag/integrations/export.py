"""Export a trained tagger to TorchScript or ONNX, to run without seqtag (or without Python).

``seqtag export --ckpt_path model.ckpt --format onnx --output tagger.onnx`` writes two files:

- ``tagger.onnx`` (or a TorchScript ``.pt`` with ``--format torchscript``): a graph from ids to
  the best tag ids. Inputs: ``words`` ``[B, T]`` int64 word ids, ``lengths`` ``[B]`` int64
  sentence lengths (each at least 1, at most ``T``) and, only for a model with character
  features, ``chars`` ``[B, T, C]`` int64 character ids (``C`` >= 1, padded with the
  vocabulary's ``char_pad_id``). Output: ``tags`` ``[B, T]`` int64, the best tag of every token
  (softmax argmax, or the CRF's Viterbi path computed inside the graph); positions past a
  sentence's length hold -1.
- ``tagger.onnx.vocab.json``: the word, tag and character lists and the exact rules that turn
  tokens into ids (see :func:`export_vocabulary`), so that text can be encoded with a few lines
  of any language.

The graph is the trained model's own modules, scripted, sharing its weights: the word
embedding; the character encoder (a :class:`~seqtag.models.chars.CharCNN` as it is; a
:class:`~seqtag.models.chars.CharBiLSTM` compiles to its ``forward_dense``, because packing has
no ONNX form); :meth:`BiRNN.run <seqtag.models.encoder.BiRNN.run>`, the recurrence that
``BiRNN.forward`` runs; the emission layer; and :func:`seqtag.models.crf.layer.viterbi`, the code
that
:meth:`CRF.decode <seqtag.models.crf.layer.CRF.decode>` runs. Kept here, and why:

- :meth:`ExportedTagger.forward` chains them the way ``BiRNNEncoder.forward`` and
  ``Tagger.decode`` do in evaluation mode (about ten lines). Those methods stay Python: they
  take ``lengths`` as a tensor, a list or ``None`` and check the values on the host, draw word
  dropout, and switch CPU autocast off; scripting them would need ``torch.jit.is_scripting()``
  branches in the training path and would carry word dropout's tables into the file.
- The CRF's scores, with its constraints applied (:meth:`CRF.constrained_scores
  <seqtag.models.crf.layer.CRF.constrained_scores>`), are copied into buffers once: the ``CRF``
  module
  itself does not compile, as its likelihood (its ``forward``) is a custom autograd Function.

Both formats come from one scripted module: TorchScript saves it, and ONNX converts it with
PyTorch's TorchScript-based exporter (``dynamo=False``), which turns the Viterbi loops into ONNX
``Loop`` nodes, so batch size and sentence length stay dynamic. ONNX export needs the ``onnx``
package (``pip install onnx``); running the file needs only an ONNX runtime.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import warnings
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from seqtag.data.vocab import SHAPES, Vocabularies, shape_entry
from seqtag.errors import CheckpointError, SeqtagError
from seqtag.files.outputs import check_output_file, refuse_same_file, replaced_atomically
from seqtag.models.chars import CharBiLSTM, CharCNN
from seqtag.models.crf.algorithms import viterbi
from seqtag.models.encoder import BiRNN, BiRNNEncoder
from seqtag.models.tagger import Tagger

if TYPE_CHECKING:
    from seqtag.training.module import SequenceTagger

__all__ = ["ExportedTagger", "export", "export_model", "export_vocabulary", "vocabulary_path"]

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


# -- the scripted module ------------------------------------------------------------------


class ExportedTagger(nn.Module):
    """A trained :class:`~seqtag.models.tagger.Tagger` as one scriptable inference module.

    ``forward(words [B, T], lengths [B], chars [B, T, C])`` returns the best tag ids [B, T]
    (-1 past each length). ``chars`` is ignored by a model without character features (give
    any ``[B, T, 1]`` tensor). It holds the tagger's own modules (shared, not copied) and a copy
    of its CRF scores; ``tagger`` is not modified.
    """

    def __init__(self, tagger: Tagger) -> None:
        super().__init__()
        encoder: BiRNNEncoder = tagger.encoder
        char_encoder = encoder.char_encoder
        if char_encoder is not None and not isinstance(char_encoder, CharCNN | CharBiLSTM):
            raise CheckpointError(f"cannot export character encoder {type(char_encoder)}")
        self.embeddings = encoder.embeddings
        self.char_encoder: CharCNN | CharBiLSTM | None = char_encoder
        self.rnn: BiRNN = encoder.rnn
        self.emission = tagger.emission
        self.has_chars = char_encoder is not None
        self.has_crf = tagger.crf is not None
        num_tags = tagger.num_tags
        if tagger.crf is not None:
            with torch.no_grad():
                scores = [s.detach().clone() for s in tagger.crf.constrained_scores()]
        else:  # unused
            scores = [torch.zeros(num_tags), torch.zeros(num_tags, num_tags), torch.zeros(num_tags)]
        self.register_buffer("start", scores[0])
        self.register_buffer("transitions", scores[1])
        self.register_buffer("end", scores[2])

    def forward(self, words: Tensor, lengths: Tensor, chars: Tensor) -> Tensor:
        mask = torch.arange(words.size(1), device=words.device).unsqueeze(0) < lengths.unsqueeze(1)
        features = self.embeddings(words)
        if self.char_encoder is not None:
            features = torch.cat([features, self.char_encoder(chars)], dim=-1)
        features = self.rnn.run(features, lengths)
        emissions = self.emission(features * mask.unsqueeze(2).to(features.dtype))  # [B, T, K]
        if self.has_crf:
            return viterbi(emissions.float(), mask, self.start, self.transitions, self.end, -1)
        best = emissions.float().softmax(dim=-1).argmax(dim=-1)  # as Tagger.decode
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


def vocabulary_path(output: str) -> str:
    """The vocabulary sidecar written beside the model file ``output``."""
    return output + ".vocab.json"


def check_outputs(ckpt_path: str, output: str) -> None:
    """Refuse outputs that cannot be written, or whose writing would destroy the checkpoint.

    Both files (the model and its ``.vocab.json``) get the checks of any seqtag output (no
    directory, device, pipe or symbolic link there), and neither may be the checkpoint being
    exported, by name or through a symbolic or hard link.
    """
    inputs = {"the checkpoint being exported (--ckpt_path)": ckpt_path}
    for path in (output, vocabulary_path(output)):
        refuse_same_file(path, inputs)  # first: the more useful message for a link to it
        check_output_file(path, missing_folder_ok=True)  # export creates the folder


def export(ckpt_path: str, format: ExportFormat, output: str) -> None:
    """Write the checkpoint's tagger as ``output`` and its vocabularies as ``output.vocab.json``.

    Both files are written under temporary names beside their targets and renamed into place
    once both are complete: a failed export leaves any earlier files as they were.

    Args:
        ckpt_path: a seqtag checkpoint (``seqtag fit`` writes them).
        format: ``onnx`` (run with onnxruntime or any ONNX runtime) or ``torchscript`` (run with
            ``torch.jit.load``; needs torch but not seqtag).
        output: the model file to write; the vocabulary goes beside it.
    """
    from seqtag.training.module import SequenceTagger

    if format not in FORMATS:
        raise SeqtagError(f"unknown export format {format!r}; choose 'onnx' or 'torchscript'")
    if not os.path.isfile(ckpt_path):
        raise CheckpointError(f"{ckpt_path}: no such checkpoint file")
    check_outputs(ckpt_path, output)
    try:
        model = SequenceTagger.load_from_checkpoint(ckpt_path, map_location="cpu")
    except (KeyError, EOFError, pickle.UnpicklingError, RuntimeError) as err:
        raise CheckpointError(f"{ckpt_path}: not a seqtag checkpoint ({err!r})") from err
    export_model(model, format, output)


def export_model(model: SequenceTagger, format: ExportFormat, output: str) -> None:
    """:func:`export` for a model in memory: the files ``seqtag export`` writes from its
    checkpoint (``trainer.save_checkpoint``), without writing one. Lightning's
    ``model.to_onnx`` and ``model.to_torchscript`` point here.

    The model is left as it was (its mode, its device): a CPU copy of its network is exported.
    """
    if format not in FORMATS:
        raise SeqtagError(f"unknown export format {format!r}; choose 'onnx' or 'torchscript'")
    vocabularies = model.vocabularies
    if vocabularies is None:
        raise CheckpointError(
            "the model has no vocabularies yet: train it or load a checkpoint before exporting"
        )
    check_output_file(output, missing_folder_ok=True)
    check_output_file(vocabulary_path(output), missing_folder_ok=True)
    tagger = copy.deepcopy(model.tagger).cpu().eval()
    exported = ExportedTagger(tagger).eval()
    module: nn.Module = exported if exported.has_chars else _WithoutChars(exported).eval()
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but it still saves, loads and
        # converts to ONNX a loop over a dynamic number of time steps (the Viterbi recursion).
        warnings.simplefilter("ignore", category=DeprecationWarning)
        scripted = torch.jit.script(module)
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    decoder = "crf" if exported.has_crf else "softmax"
    sidecar = vocabulary_path(output)
    with replaced_atomically(output) as model_file, replaced_atomically(sidecar) as vocab_file:
        if format == "torchscript":
            scripted.save(str(model_file))
        else:
            _export_onnx(scripted, exported.has_chars, str(model_file))
        with open(vocab_file, "w", encoding="utf-8") as stream:
            json.dump(export_vocabulary(vocabularies, decoder, format), stream, ensure_ascii=False)
            stream.write("\n")
    log.info("wrote %s and %s", output, sidecar)
