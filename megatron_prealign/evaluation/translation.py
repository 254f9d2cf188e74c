"""Translation evaluation (x-LLaMA's Flores-101 protocol): sources and references as Flores-style
files (one sentence a line, ``--src`` / ``--ref``) or JSON lines, prompts through the instruction
template with the canonical translation instruction, greedy generation, and corpus-level scores:

- BLEU: sacrebleu's corpus BLEU with its ``13a`` tokenizer, ``zh`` for Chinese targets and
  ``ja-mecab`` for Japanese when MeCab is installed (else ``char``, named in the signature);
- chrF++: sacrebleu's chrF with word bigrams (``word_order=2``);
- spBLEU: BLEU over the pieces of a Flores SentencePiece model, only with a local
  ``--spm-model`` (what sacrebleu's ``flores101`` tokenizer does after downloading the model);
- COMET: only with a local ``--comet-model`` and the ``unbabel-comet`` package, else
  reported as not computed.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

from megatron_prealign.evaluation.model_loading import EvaluationError

NOT_COMPUTED = "not computed"


def read_lines(path: str, flag: str) -> List[str]:
    if not os.path.isfile(path):
        raise EvaluationError(f"{flag} {path} does not exist")
    with open(path, encoding="utf-8") as handle:
        # One item a line; an empty last line is an item too (an empty prediction): iterating
        # a file never yields a phantom "" after the final newline.
        lines = [line.rstrip("\n").rstrip("\r") for line in handle]
    if not lines:
        raise EvaluationError(f"{flag} {path} is empty: nothing to evaluate")
    return lines


def read_pairs(src: Optional[str], ref: Optional[str], jsonl: Optional[str], src_lang: str,
               tgt_lang: str) -> Dict[str, List[str]]:
    """{"sources": [...], "references": [...]} from two line-aligned files or JSON lines with
    the two language codes as keys ({"en": ..., "de": ...})."""
    from megatron_prealign.evaluation.common import read_jsonl

    if jsonl:
        sources, references = [], []
        for number, record in enumerate(read_jsonl(jsonl, "--jsonl"), 1):
            if src_lang not in record or tgt_lang not in record:
                raise EvaluationError(f"{jsonl}: record {number} lacks the key {src_lang!r} or "
                                      f"{tgt_lang!r} (give --src-lang / --tgt-lang as its keys)")
            sources.append(str(record[src_lang]))
            references.append(str(record[tgt_lang]))
        return {"sources": sources, "references": references}
    if not src or not ref:
        raise EvaluationError("give --src FILE and --ref FILE, or --jsonl FILE")
    sources, references = read_lines(src, "--src"), read_lines(ref, "--ref")
    if len(sources) != len(references):
        raise EvaluationError(f"--src {src} has {len(sources)} lines but --ref {ref} has "
                              f"{len(references)}: give line-aligned files of one direction")
    return {"sources": sources, "references": references}


def bleu_tokenizer(target_language: str) -> str:
    """sacrebleu's tokenizer for a target language: ISO 639-1 (zh, ja) or Flores codes (zho_Hans, jpn_Jpan)."""
    code = target_language.lower()
    if code.startswith(("zh", "zho", "cmn")):
        return "zh"
    if code.startswith(("ja", "jpn")):
        try:
            import MeCab  # noqa: F401
            return "ja-mecab"
        except ImportError:
            return "char"
    return "13a"


def score(hypotheses: Sequence[str], references: Sequence, target_language: str,
          spm_model: Optional[str] = None, comet_model: Optional[str] = None,
          sources: Optional[Sequence[str]] = None) -> Dict:
    """Corpus scores. ``references``: one reference per segment, or a list of reference
    streams (sacrebleu's layout) for several references per segment."""
    from sacrebleu.metrics import BLEU, CHRF

    streams = [list(r) for r in references] if references and not isinstance(references[0], str) \
        else [list(references)]
    if not streams[0]:
        raise EvaluationError("empty evaluation set")
    if any(len(hypotheses) != len(stream) for stream in streams):
        raise EvaluationError(f"{len(hypotheses)} predictions for {len(streams[0])} references")
    references = streams[0]
    bleu = BLEU(tokenize=bleu_tokenizer(target_language))
    chrf = CHRF(word_order=2)
    result = {
        "bleu": bleu.corpus_score(list(hypotheses), streams).score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf++": chrf.corpus_score(list(hypotheses), streams).score,
        "chrf++_signature": str(chrf.get_signature()),
        "spbleu": NOT_COMPUTED + " (give a local Flores SentencePiece model with --spm-model)",
        "comet": NOT_COMPUTED + " (give a local COMET model with --comet-model)",
        "segments": len(references),
    }
    if spm_model:
        import sentencepiece

        if not os.path.isfile(spm_model):
            raise EvaluationError(f"--spm-model {spm_model} does not exist")
        processor = sentencepiece.SentencePieceProcessor(model_file=spm_model)
        pieces = lambda lines: [" ".join(processor.encode(line, out_type=str)) for line in lines]  # noqa: E731
        spbleu = BLEU(tokenize="none")
        result["spbleu"] = spbleu.corpus_score(pieces(hypotheses), [pieces(r) for r in streams]).score
        result["spbleu_signature"] = f"{spbleu.get_signature()}|spm:{os.path.basename(spm_model)}"
    if comet_model:
        result["comet"] = comet_score(comet_model, hypotheses, references, sources)
    return result


def comet_score(model_path: str, hypotheses, references, sources):
    if not os.path.exists(model_path):
        raise EvaluationError(f"--comet-model {model_path} does not exist (a local checkpoint path)")
    try:
        from comet import load_from_checkpoint
    except ImportError:
        return NOT_COMPUTED + " (the unbabel-comet package is not installed)"
    if sources is None:
        return NOT_COMPUTED + " (COMET needs the sources)"
    model = load_from_checkpoint(model_path)
    data = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(sources, hypotheses, references)]
    return float(model.predict(data, batch_size=8, gpus=0, progress_bar=False).system_score)


def prompts(sources: Sequence[str], src_lang: str, tgt_lang: str, template,
            extra_names=None) -> List[str]:
    from megatron_prealign.instruct.templates import TemplateError, translation_instruction

    try:
        instruction = translation_instruction(src_lang, tgt_lang, 0, extra_names)
    except TemplateError as error:
        raise EvaluationError(str(error)) from error
    return [template.render(instruction, source.strip())[0] for source in sources]
