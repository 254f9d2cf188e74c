"""The training tokenizer as a transformers tokenizer that encodes the same ids.

- SentencePiece (`SentencePieceTokenizer`, `GPTSentencePieceTokenizer`, `Llama2Tokenizer`): the
  `.model` becomes a `tokenizer.json` through transformers' own SentencePiece converter
  (`SpmConverter.build_tokenizer_from_spm_proto`, which follows the model's normalizer spec:
  NFKC charsmap, extra-whitespace removal, dummy prefix, byte fallback); literal "<s>" in a text
  stays text, as in SentencePiece (`split_special_tokens`). No BOS/EOS is added, as in training.
- `HuggingFaceTokenizer` (e.g. the byte-level BPE of `tools/train_tokenizer.py`): the directory
  is loaded with `AutoTokenizer` and saved again (its `tokenizer.json`).

Before anything is written, the result must encode a set of probe texts (several scripts,
digits, whitespace runs) to exactly the ids of the training tokenizer.
"""

from __future__ import annotations

from typing import Optional

from megatron_prealign.data.tokenizer import build_tokenizer
from megatron_prealign.hf.config import ConversionError

SENTENCEPIECE_TYPES = ("SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer")
SUPPORTED = (*SENTENCEPIECE_TYPES, "HuggingFaceTokenizer")
PROBES = (
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "敏捷的棕色狐狸跳过了懒狗。", "Быстрая коричневая лиса", "naïve café — 12345 + 6.78%",
    "  leading and trailing spaces  ", "tabs\tand\nnewlines\n\nhere", "x  y   z", "", "a",
    "<s> literal markers </s>", "emoji 🙂 and ﬁ ligature",
)


def _sentencepiece(model_path: str):
    import transformers
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto = import_protobuf().ModelProto()
    with open(model_path, "rb") as f:
        proto.ParseFromString(f.read())
    if proto.trainer_spec.model_type == 2:  # BPE
        vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    else:
        vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    # legacy=True: the dummy prefix also after stripped leading spaces, as SentencePiece does.
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
    if backend is None:
        raise ConversionError(f"--tokenizer-model {model_path}: unsupported SentencePiece model type")
    spec = proto.trainer_spec

    def piece(i):
        return proto.pieces[i].piece if 0 <= i < len(proto.pieces) else None

    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token=piece(spec.unk_id), bos_token=piece(spec.bos_id),
        eos_token=piece(spec.eos_id), pad_token=piece(spec.pad_id), split_special_tokens=True,
        clean_up_tokenization_spaces=False)


def build_hf_tokenizer(tokenizer_type: str, tokenizer_model: str):
    import transformers

    if tokenizer_type in SENTENCEPIECE_TYPES:
        return _sentencepiece(tokenizer_model)
    if tokenizer_type == "HuggingFaceTokenizer":
        return transformers.AutoTokenizer.from_pretrained(tokenizer_model)
    raise ConversionError(f"--tokenizer-type {tokenizer_type}: export supports {', '.join(SUPPORTED)}")


def check_tokenizer(tokenizer_args: dict, model_vocab: int, probes=PROBES):
    """The transformers tokenizer, after checking it encodes like the training tokenizer and
    fits the model's vocabulary."""
    kind, path = tokenizer_args["tokenizer_type"], tokenizer_args["tokenizer_model"]
    try:
        training = build_tokenizer(kind, path)
        exported = build_hf_tokenizer(kind, path)
    except (OSError, ValueError) as error:
        raise ConversionError(f"--tokenizer-model {path}: cannot load it ({error})") from error
    for text in probes:
        # encode() as users call it (AutoTokenizer's defaults, special tokens included)
        ours, theirs = list(training.tokenize(text)), exported.encode(text)
        if ours != theirs:
            raise ConversionError(
                f"--tokenizer-model {path}: the transformers tokenizer encodes {text!r} as "
                f"{theirs[:12]}, training encoded {ours[:12]}; not exported")
    if len(exported) > model_vocab:
        raise ConversionError(f"--tokenizer-model {path} has {len(exported)} tokens, the model only "
                              f"{model_vocab}: not this model's tokenizer")
    return exported


def tokenizer_args(tokenizer_type: Optional[str], tokenizer_model: Optional[str]) -> Optional[dict]:
    if tokenizer_model is None:
        return None
    if tokenizer_type is None:
        raise ConversionError("--tokenizer-model needs --tokenizer-type (the type used in training)")
    if tokenizer_type not in SUPPORTED:
        raise ConversionError(f"--tokenizer-type {tokenizer_type}: export supports {', '.join(SUPPORTED)}")
    return {"tokenizer_type": tokenizer_type, "tokenizer_model": tokenizer_model}
