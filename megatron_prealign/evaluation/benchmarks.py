"""Benchmark files in the layout their publishers distribute (nothing is downloaded: the user
points at the unpacked directory; a missing file is named in the error).

* Flores-101 (``flores101_dataset/{dev,devtest}/<code>.devtest``, codes such as ``eng``,
  ``zho_simpl``) and Flores-200 (``flores200_dataset/{dev,devtest}/<code>.devtest``, codes such as
  ``eng_Latn``, ``zho_Hans``): one sentence a line, line-aligned across languages. A language is
  given by its ISO 639-1 code (``FLORES_CODES``) or by the Flores file code itself.
* XQuAD (``xquad.<lang>.json``) and MLQA (``MLQA_V1/{dev,test}/<split>-context-<c>-question-<q>.json``):
  SQuAD-format JSON, read by :func:`qa.read_squad`.
* XNLI (``XNLI-1.0/xnli.{dev,test}.tsv``) and XNLI-MT (``XNLI-MT-1.0/multinli/multinli.train.<lang>.tsv``):
  read by :func:`classification.read_examples`.
"""

from __future__ import annotations

import os
from typing import Tuple

from megatron_prealign.errors import EvaluationError

# ISO 639-1 -> (Flores-101 file code, Flores-200 file code), the x-LLaMA and PreAlign languages
# and other common ones.
FLORES_CODES = {
    "ar": ("ara", "arb_Arab"), "bn": ("ben", "ben_Beng"), "cs": ("ces", "ces_Latn"),
    "de": ("deu", "deu_Latn"), "el": ("ell", "ell_Grek"), "en": ("eng", "eng_Latn"),
    "es": ("spa", "spa_Latn"), "fa": ("fas", "pes_Arab"), "fi": ("fin", "fin_Latn"),
    "fr": ("fra", "fra_Latn"), "he": ("heb", "heb_Hebr"), "hi": ("hin", "hin_Deva"),
    "id": ("ind", "ind_Latn"), "it": ("ita", "ita_Latn"), "ja": ("jpn", "jpn_Jpan"),
    "ko": ("kor", "kor_Hang"), "nl": ("nld", "nld_Latn"), "pl": ("pol", "pol_Latn"),
    "pt": ("por", "por_Latn"), "ru": ("rus", "rus_Cyrl"), "sw": ("swh", "swh_Latn"),
    "ta": ("tam", "tam_Taml"), "th": ("tha", "tha_Thai"), "tr": ("tur", "tur_Latn"),
    "uk": ("ukr", "ukr_Cyrl"), "ur": ("urd", "urd_Arab"), "vi": ("vie", "vie_Latn"),
    "zh": ("zho_simpl", "zho_Hans"),
}
FLORES_SPLITS = ("dev", "devtest")


def flores_file(root: str, language: str, split: str = "devtest") -> Tuple[str, str]:
    """(path, Flores version) of ``language``'s file under a Flores-101 or Flores-200 directory
    (the one holding ``dev/`` and ``devtest/``)."""
    if split not in FLORES_SPLITS:
        raise EvaluationError(f"--flores-split {split!r}: one of {', '.join(FLORES_SPLITS)}")
    directory = os.path.join(root, split)
    if not os.path.isdir(directory):
        raise EvaluationError(f"--flores-dir {root}: no {split}/ directory ({directory} does not exist); "
                              "give the unpacked flores101_dataset or flores200_dataset directory")
    codes = FLORES_CODES.get(language, (language, language))
    candidates = [(os.path.join(directory, f"{code}.{split}"), version)
                  for code, version in zip(codes, ("flores101", "flores200"))]
    for path, version in candidates:
        if os.path.isfile(path):
            return path, version
    tried = " or ".join(dict.fromkeys(path for path, _ in candidates))
    raise EvaluationError(f"--flores-dir {root}: no {split} file for language {language!r} ({tried} does not "
                          "exist); give an ISO 639-1 code of FLORES_CODES or the Flores file code")


def xquad_file(root: str, language: str) -> str:
    path = os.path.join(root, f"xquad.{language}.json")
    if not os.path.isfile(path):
        raise EvaluationError(f"--xquad-dir {root}: {path} does not exist (XQuAD's files are xquad.<lang>.json)")
    return path


def mlqa_file(root: str, context_language: str, question_language: str, split: str = "test") -> str:
    """MLQA_V1's ``<split>/<split>-context-<c>-question-<q>.json`` (``root``: the MLQA_V1 directory)."""
    if split not in ("dev", "test"):
        raise EvaluationError(f"--mlqa-split {split!r}: dev or test")
    path = os.path.join(root, split, f"{split}-context-{context_language}-question-{question_language}.json")
    if not os.path.isfile(path):
        raise EvaluationError(f"--mlqa-dir {root}: {path} does not exist (MLQA_V1's files are "
                              f"{split}/{split}-context-<lang>-question-<lang>.json)")
    return path
