"""Prompts from JSON-lines records: ``{"prompt": text}`` as is, or an instruction record
``{"instruction": ..., "input": ...}`` rendered with the instruction-tuning template (Alpaca /
x-LLM by default, a user template with ``--template``), exactly as training rendered it."""

from __future__ import annotations

from typing import List, Optional

from megatron_prealign.errors import EvaluationError
from megatron_prealign.instruct.templates import ALPACA, PromptTemplate, TemplateError


def load_template(path: Optional[str]) -> PromptTemplate:
    if not path:
        return ALPACA
    try:
        return PromptTemplate.from_file(path)
    except TemplateError as error:
        raise EvaluationError(str(error)) from error


def record_prompt(record: dict, template: PromptTemplate, prompt_key: str = "prompt") -> str:
    if prompt_key in record:
        return str(record[prompt_key])
    if "instruction" in record:
        return template.render(str(record["instruction"]), str(record.get("input") or ""))[0]
    raise KeyError(f"neither {prompt_key!r} nor 'instruction'")


def records_to_prompts(records: List[dict], template: PromptTemplate, path: str,
                       prompt_key: str = "prompt") -> List[str]:
    prompts = []
    for number, record in enumerate(records, 1):
        try:
            prompts.append(record_prompt(record, template, prompt_key))
        except KeyError as error:
            raise EvaluationError(
                f"{path}: record {number} has {error} key: give {{\"{prompt_key}\": ...}} or an "
                "instruction record {\"instruction\": ..., \"input\": ...}") from None
    return prompts
