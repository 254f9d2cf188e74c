"""Multilingual extractive QA by generation (x-LLaMA's XQuAD / MLQA protocol).

Input: SQuAD-format JSON (``{"data": [{"paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}]}]}]}]}``), the native XQuAD and MLQA files. Each question
becomes an instruction record (the reference code's per-language instruction and "context /
question / answer" input below)
rendered with the instruction template; the model's greedy answer is scored by

- containment accuracy (x-LLM's ``eval/xquad.match.py``, what its tables report): the first gold
  answer (stripped, lowercased) is a substring of the lowercased prediction;
- exact match and F1 (max over the gold answers, x 100) under one of two published definitions
  (``METRICS``), which differ only in the normalisation before comparing:

  * ``squad-v1.1`` (the SQuAD v1.1 script, with which XTREME scores XQuAD): lowercase; drop
    ASCII punctuation (``string.punctuation``); drop the English articles a / an / the; tokens
    by whitespace;
  * ``mlqa`` (MLQA's official script): lowercase; drop every character of a Unicode punctuation
    category (P*) and ASCII punctuation; drop articles (language-specific, MLQA's lists: en, es,
    vi, de, ar; none for other languages); tokens by whitespace, for zh by "mixed segmentation"
    (each CJK character and punctuation mark a token, other runs split at whitespace).

  For English the two differ only where an answer contains non-ASCII punctuation (curly
  quotes, dashes), which MLQA removes and SQuAD keeps; for zh, de, es, vi, ar they differ more.
"""

from __future__ import annotations

import json
import os
import re
import string
import sys
import unicodedata
from collections import Counter
from typing import Dict, List, Optional, Sequence

from megatron_prealign.errors import EvaluationError
from megatron_prealign.evaluation.common import wilson_interval

PUNCTUATION = frozenset(
    {chr(i) for i in range(sys.maxunicode + 1) if unicodedata.category(chr(i)).startswith("P")}
    | set(string.punctuation))
ARTICLES = {  # MLQA's evaluation script
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": r"\sال^|ال",
}
SQUAD_PUNCTUATION = frozenset(string.punctuation)
SQUAD_ARTICLES = r"\b(a|an|the)\b"
MIXED_SEGMENTATION = ("zh",)
METRICS = ("squad-v1.1", "mlqa")
# MLQA's file names: {dev,test}/{split}-context-{lang}-question-{lang}.json
MLQA_FILE = re.compile(r"^(dev|test)-context-([a-z]{2})-question-([a-z]{2})\.json$")
CJK = re.compile(r"[\u4e00-\u9fa5]")

# The x-LLM reference code's per-language instruction and input template (its XQuAD / MLQA data
# loaders); the model's answer follows the rendered prompt. Other languages: --qa-instruction and
# --qa-input-template.
QA_PROMPTS = {
    "ar": ("الرجاء الإجابة على الأسئلة بناءً على الفقرات التالية", "فقرة: {context}\nسؤال: {question}\nإجابة: "),
    "el": ("Απαντήστε στις ερωτήσεις με βάση τις παρακάτω παραγράφους",
           "παράγραφος: {context}\nερώτηση: {question}\nΑπάντηση: "),
    "en": ("Answer the final question with following context", "Context: {context}\nQuestion: {question}\nAnswer: "),
    "hi": ("कृपया निम्नलिखित पैराग्राफ के अनुसार प्रश्नों के उत्तर दें", "अनुच्छेद: {context}\nसवाल: {question}\nउत्तर: "),
    "tr": ("Lütfen soruları aşağıdaki paragraflara göre cevaplayınız",
           "paragraf: {context}\nsoru: {question}\nCevap: "),
    "vi": ("Hãy trả lời các câu hỏi theo đoạn văn sau", "đoạn văn: {context}\ncâu hỏi: {question}\nTrả lời: "),
    "zh": ("请根据以下段落，回答问题", "段落: {context}\n问题: {question}\n答案: "),
}


def mixed_segmentation(text: str) -> List[str]:
    tokens, run = [], ""
    for char in text:
        if CJK.search(char) or char in PUNCTUATION:
            tokens.extend(run.split())
            run = ""
            tokens.append(char)
        else:
            run += char
    tokens.extend(run.split())
    return tokens


def metric_for(path: str, metric: str = "auto") -> str:
    """The EM / F1 definition: ``metric``, or with "auto" MLQA's for an MLQA file name and
    SQuAD v1.1's (XTREME's XQuAD scoring) otherwise."""
    if metric != "auto":
        if metric not in METRICS:
            raise EvaluationError(f"--qa-metric {metric!r}: one of auto, {', '.join(METRICS)}")
        return metric
    return "mlqa" if MLQA_FILE.match(os.path.basename(path)) else "squad-v1.1"


def normalize_answer(text: str, language: str, metric: str = "mlqa") -> str:
    if metric == "squad-v1.1":
        text = "".join(ch for ch in text.lower() if ch not in SQUAD_PUNCTUATION)
        return " ".join(re.sub(SQUAD_ARTICLES, " ", text).split())
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    if language in ARTICLES:
        text = re.sub(ARTICLES[language], " ", text)
    tokens = mixed_segmentation(text) if language in MIXED_SEGMENTATION else text.split()
    return " ".join(t for t in tokens if t.strip())


def exact_match(prediction: str, gold: str, language: str, metric: str = "mlqa") -> float:
    return float(normalize_answer(prediction, language, metric) == normalize_answer(gold, language, metric))


def f1(prediction: str, gold: str, language: str, metric: str = "mlqa") -> float:
    predicted = normalize_answer(prediction, language, metric).split()
    truth = normalize_answer(gold, language, metric).split()
    same = sum((Counter(predicted) & Counter(truth)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(truth)
    return 2 * precision * recall / (precision + recall)


def contains(prediction: str, gold: str) -> float:
    """x-LLM's match: the lowercased gold answer inside the lowercased prediction."""
    return float(gold.lower() in prediction.lower())


def read_squad(path: str) -> List[Dict]:
    """[{"id", "context", "question", "answers": [text, ...]}] of a SQuAD-format file."""
    if not os.path.isfile(path):
        raise EvaluationError(f"--input {path} does not exist")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from error
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise EvaluationError(f"{path}: expected SQuAD format {{\"data\": [{{\"paragraphs\": ...}}]}}")
    items, seen = [], set()
    for a, article in enumerate(data["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise EvaluationError(f"{path}: data[{a}] has no 'paragraphs' list")
        for p, paragraph in enumerate(paragraphs):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str) \
                    or not isinstance(paragraph.get("qas"), list):
                raise EvaluationError(f"{where} needs a 'context' string and a 'qas' list")
            for q, qa in enumerate(paragraph["qas"]):
                answers = qa.get("answers") if isinstance(qa, dict) else None
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str) or "id" not in qa \
                        or not isinstance(answers, list) or not answers \
                        or not all(isinstance(x, dict) and isinstance(x.get("text"), str) for x in answers):
                    raise EvaluationError(
                        f"{where}.qas[{q}] needs 'id', 'question' and a non-empty 'answers' list of "
                        "{\"text\": ...}")
                if qa["id"] in seen:
                    raise EvaluationError(f"{where}.qas[{q}]: duplicate id {qa['id']!r}")
                seen.add(qa["id"])
                items.append({"id": str(qa["id"]), "context": paragraph["context"],
                              "question": qa["question"], "answers": [x["text"] for x in answers]})
    if not items:
        raise EvaluationError(f"{path}: no questions (empty evaluation set)")
    return items


def qa_prompt(language: str, instruction: Optional[str] = None, input_template: Optional[str] = None):
    """(instruction, input template) of a language: the reference code's, or the user's."""
    if instruction and input_template:
        if "{context}" not in input_template or "{question}" not in input_template:
            raise EvaluationError("--qa-input-template needs the fields {context} and {question}")
        return instruction, input_template
    if language not in QA_PROMPTS:
        raise EvaluationError(
            f"--language {language!r} has no QA prompt (known: {', '.join(sorted(QA_PROMPTS))}); "
            "give --qa-instruction TEXT and --qa-input-template 'TEXT {context} TEXT {question} TEXT'")
    return QA_PROMPTS[language]


def prompts(items: Sequence[Dict], language: str, template, instruction: Optional[str] = None,
            input_template: Optional[str] = None) -> List[str]:
    instruction, input_template = qa_prompt(language, instruction, input_template)
    return [template.render(instruction, input_template.format(context=item["context"].strip(),
                                                              question=item["question"].strip()))[0]
            for item in items]


def score(items: Sequence[Dict], predictions: Dict[str, str], language: str, metric: str = "mlqa") -> Dict:
    missing = [item["id"] for item in items if item["id"] not in predictions]
    if missing:
        raise EvaluationError(f"no prediction for {len(missing)} question(s), e.g. id {missing[0]!r}")
    per_item = []
    for item in items:
        prediction = predictions[item["id"]]
        per_item.append({
            "id": item["id"], "prediction": prediction,
            # the reference code checks its record's "output", the first gold answer
            "contains": contains(prediction, item["answers"][0].strip()),
            "exact_match": max(exact_match(prediction, g, language, metric) for g in item["answers"]),
            "f1": max(f1(prediction, g, language, metric) for g in item["answers"]),
        })
    n = len(per_item)

    correct = int(sum(x["contains"] for x in per_item))
    return {"language": language, "questions": n, "em_f1_definition": metric,
            "containment_accuracy": 100.0 * correct / n,
            "containment_ci95": [100.0 * v for v in wilson_interval(correct, n)],
            "exact_match": 100.0 * sum(x["exact_match"] for x in per_item) / n,
            "f1": 100.0 * sum(x["f1"] for x in per_item) / n,
            "per_item": per_item}
