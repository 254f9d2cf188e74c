"""Translation evaluation: sources and references as Flores files (one sentence a line, ``--src`` /
``--ref``, or a Flores-101 / Flores-200 directory), or JSON lines, prompts through the instruction
template with the canonical translation instruction, greedy generation, and corpus-level scores
(x-LLaMA's exact protocol, spBLEU as its primary metric, is ``--protocol xllama``):

- BLEU: sacrebleu's corpus BLEU with its ``13a`` tokenizer, ``zh`` for Chinese targets and
  ``ja-mecab`` for Japanese when MeCab is installed (else ``char``, named in the signature);
- chrF++: sacrebleu's chrF with word bigrams (``word_order=2``);
- spBLEU: sacrebleu's BLEU with its ``flores101`` (or ``flores200``) tokenizer and
  ``effective_order=True`` (x-LLM's ``eval/translation.bleu.py``), over the user's local Flores
  SentencePiece model (``--spm-model``): sacrebleu would download it on first use, so the file
  is shown to sacrebleu where it looks for it (``SPM_URLS``) and nothing is fetched;
- COMET: only with a local ``--comet-model`` and the ``unbabel-comet`` package, else
  reported as not computed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence

from megatron_prealign.errors import EvaluationError
from megatron_prealign.evaluation.common import read_jsonl
from megatron_prealign.instruct.templates import TemplateError, translation_instruction

NOT_COMPUTED = "not computed"
# Where users get the Flores SentencePiece models (the URLs sacrebleu itself downloads from).
SPM_URLS = {"flores101": "https://dl.fbaipublicfiles.com/fairseq/models/flores/sacrebleu_tokenizer_spm.model",
            "flores200": "https://tinyurl.com/flores200sacrebleuspm"}


def missing_spm_message(tokenizer: str, why: str) -> str:
    return (f"{why} needs the Flores SentencePiece model of sacrebleu's {tokenizer!r} tokenizer: give "
            f"a local copy with --spm-model FILE (download it once from {SPM_URLS[tokenizer]}); "
            "nothing is downloaded here and BLEU is never silently computed with another tokenizer")


def spbleu_metric(spm_model: str, tokenizer: str = "flores101"):
    """sacrebleu's ``BLEU(tokenize=tokenizer, effective_order=True)`` reading ``spm_model``.

    sacrebleu's SPM tokenizers load ``$SACREBLEU/models/<file name of the URL>`` and download it
    when absent; a private directory holding a link to the user's file stands in for
    ``$SACREBLEU`` while the metric (which loads the model) is built."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.tokenizers import tokenizer_spm

    if tokenizer not in SPM_URLS:
        raise EvaluationError(f"--spm-tokenizer {tokenizer!r}: one of {', '.join(SPM_URLS)}")
    if not spm_model or not os.path.isfile(spm_model):
        raise EvaluationError(missing_spm_message(tokenizer, f"spBLEU (--spm-model {spm_model} does not exist)"
                                                  if spm_model else "spBLEU"))
    name = os.path.basename(tokenizer_spm.SPM_MODELS[tokenizer]["url"])
    home = tempfile.mkdtemp(prefix="sacrebleu_spm_")
    saved = tokenizer_spm.SACREBLEU_DIR
    try:
        os.makedirs(os.path.join(home, "models"))
        try:
            os.symlink(os.path.abspath(spm_model), os.path.join(home, "models", name))
        except OSError:  # no symlinks on this filesystem
            shutil.copyfile(spm_model, os.path.join(home, "models", name))
        tokenizer_spm.SACREBLEU_DIR = home
        metric = BLEU(tokenize=tokenizer, effective_order=True)
    finally:
        tokenizer_spm.SACREBLEU_DIR = saved
        shutil.rmtree(home, ignore_errors=True)
    with open(spm_model, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    return metric, digest


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
          sources: Optional[Sequence[str]] = None, spm_tokenizer: str = "flores101") -> Dict:
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
        spbleu, digest = spbleu_metric(spm_model, spm_tokenizer)
        result["spbleu"] = spbleu.corpus_score(list(hypotheses), streams).score
        result["spbleu_signature"] = str(spbleu.get_signature())
        result["spbleu_model"] = {"path": os.path.abspath(spm_model), "sha256": digest}
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
            extra_names=None, style: str = "prealign") -> List[str]:
    try:
        instruction = translation_instruction(src_lang, tgt_lang, 0, extra_names, style)
    except TemplateError as error:
        raise EvaluationError(str(error)) from error
    return [template.render(instruction, source.strip())[0] for source in sources]
