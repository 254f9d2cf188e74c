"""Prompt templates of instruction tuning: the Alpaca / x-LLM prompt, translation instructions,
language names, and user templates from a JSON file.

A record is rendered into a (prompt, response) pair of strings. Tokenizers encode the two parts
separately and concatenate the ids, so the loss mask boundary is exact (the x-LLM reference code
tokenizes the prompt alone and can be off by one at a SentencePiece boundary).
"""

import json
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from megatron_prealign.errors import TemplateError
from megatron_prealign.instruct import xllm_data

# The Alpaca / x-LLM prompts, character for character; the response follows "### Response:"
# directly (no space, no newline), as in the reference code.
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)

# Paraphrased translation instructions. Training records rotate through them by record index;
# evaluation always uses the first one (the canonical instruction). Only the first is x-LLM's;
# its 33 and its ISO 639 language names are the "xllm" style (instruct/xllm_data.py), which the
# evaluation's --protocol xllama uses.
TRANSLATION_INSTRUCTIONS = (
    "Translate the following sentences from {source} to {target}.",
    "Translate this text from {source} into {target}.",
    "Please translate the following {source} text into {target}.",
    "What is the {target} translation of the following {source} sentences?",
    "Render the following {source} sentences in {target}.",
    "Convert the following {source} text into {target}.",
    "Give the {target} version of this {source} text.",
    "Provide a {target} translation of the following sentences written in {source}.",
)

# ISO 639-1 codes -> English names: the x-LLaMA paper's languages (ar, el, hi, tr, vi, zh) and
# common ones. Extend per run with --language-name CODE=Name.
LANGUAGE_NAMES: Dict[str, str] = {
    "ar": "Arabic", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "fr": "French", "hi": "Hindi", "it": "Italian", "ja": "Japanese", "ko": "Korean",
    "nl": "Dutch", "pt": "Portuguese", "ru": "Russian", "sw": "Swahili", "th": "Thai",
    "tr": "Turkish", "vi": "Vietnamese", "zh": "Chinese",
}


STYLES = ("prealign", "xllm")


def _style(style: str):
    """(instructions with {source} / {target}, language names) of a prompt style."""
    if style == "xllm":
        instructions = tuple(i.replace("{source_lang}", "{source}").replace("{target_lang}", "{target}")
                             for i in xllm_data.TRANSLATION_INSTRUCTIONS)
        return instructions, xllm_data.LANGUAGE_NAMES
    if style != "prealign":
        raise TemplateError(f"unknown prompt style {style!r}; one of {', '.join(STYLES)}")
    return TRANSLATION_INSTRUCTIONS, LANGUAGE_NAMES


def language_name(code: str, extra: Optional[Mapping[str, str]] = None, style: str = "prealign") -> str:
    names = {**_style(style)[1], **(extra or {})}
    if code not in names:
        raise TemplateError(
            f"unknown language code {code!r}; known: {', '.join(sorted(names))} "
            f"(or name it with --language-name {code}=Name)"
        )
    return names[code]


def translation_instruction(source: str, target: str, index: int = 0,
                            extra_names: Optional[Mapping[str, str]] = None, style: str = "prealign") -> str:
    """The translation instruction for record `index` (0, the canonical one, for evaluation)."""
    instructions = _style(style)[0]
    template = instructions[index % len(instructions)]
    return template.format(source=language_name(source, extra_names, style),
                           target=language_name(target, extra_names, style))


# Chat (``--format messages``) defaults: Alpaca's section headers, one turn after the other.
CHAT_SYSTEM = "{content}\n\n"
CHAT_USER = "### Instruction:\n{content}\n\n### Response:"
CHAT_TURN_SEPARATOR = "\n\n"
ROLES = ("system", "user", "assistant")
TEMPLATE_KEYS = ("prompt_input", "prompt_no_input", "response_suffix", "chat_system", "chat_user",
                 "chat_turn_separator")


@dataclass(frozen=True)
class PromptTemplate:
    """Prompt strings with `{instruction}` / `{input}` fields; the response is appended as is.

    Chat records (a list of messages) render as: each system message through ``chat_system``,
    each user message through ``chat_user``, each assistant message as is (the target), and
    ``chat_turn_separator`` (not a target) after every assistant message but the last.
    """

    prompt_input: str = ALPACA_PROMPT_INPUT
    prompt_no_input: str = ALPACA_PROMPT_NO_INPUT
    response_suffix: str = ""
    chat_system: str = CHAT_SYSTEM
    chat_user: str = CHAT_USER
    chat_turn_separator: str = CHAT_TURN_SEPARATOR

    @classmethod
    def from_file(cls, path: str) -> "PromptTemplate":
        """A user's template: JSON {"prompt_input": ..., "prompt_no_input": ..., "response_suffix": ...}."""
        try:
            with open(path, encoding="utf-8") as handle:
                spec = json.load(handle)
        except (OSError, json.JSONDecodeError) as error:
            raise TemplateError(f"--template {path}: {error}") from None
        unknown = set(spec) - set(TEMPLATE_KEYS) if isinstance(spec, dict) else set()
        if not isinstance(spec, dict) or unknown or "prompt_input" not in spec:
            raise TemplateError(
                f"--template {path}: expected a JSON object with 'prompt_input' (and optionally "
                f"{', '.join(repr(k) for k in TEMPLATE_KEYS[1:])}); unknown keys: {sorted(unknown)}"
            )
        if not all(isinstance(value, str) for value in spec.values()):
            raise TemplateError(f"--template {path}: every value must be a string")
        defaults = cls()
        template = cls(
            spec["prompt_input"], spec.get("prompt_no_input", spec["prompt_input"]),
            **{key: spec.get(key, getattr(defaults, key)) for key in TEMPLATE_KEYS[2:]},
        )
        fields = (("prompt_input", ("instruction", "input")), ("prompt_no_input", ("instruction", "input")),
                  ("chat_system", ("content",)), ("chat_user", ("content",)))
        for name, allowed in fields:
            try:
                getattr(template, name).format(**{field: "" for field in allowed})
            except (KeyError, IndexError, ValueError) as error:
                raise TemplateError(f"--template {path}: {name} has a field other than "
                                    f"{' / '.join('{' + f + '}' for f in allowed)}: {error}") from None
        return template

    def render(self, instruction: str, input: str = "", output: str = "") -> Tuple[str, str]:
        """(prompt, response) of one record."""
        if input:
            prompt = self.prompt_input.format(instruction=instruction, input=input)
        else:
            # A user's template without prompt_no_input uses prompt_input, {input} left empty.
            prompt = self.prompt_no_input.format(instruction=instruction, input="")
        return prompt, output + self.response_suffix

    def render_messages(self, messages: Sequence[Tuple[str, str]]) -> List[Tuple[str, bool]]:
        """(text, is_target) parts of a chat given as (role, content) pairs; the assistant
        messages (with ``response_suffix``) are the targets."""
        parts: List[Tuple[str, bool]] = []
        last_assistant = max((i for i, (role, _) in enumerate(messages) if role == "assistant"), default=-1)
        for index, (role, content) in enumerate(messages):
            if role == "system":
                parts.append((self.chat_system.format(content=content), False))
            elif role == "user":
                parts.append((self.chat_user.format(content=content), False))
            elif role == "assistant":
                parts.append((content + self.response_suffix, True))
                if index != last_assistant:
                    parts.append((self.chat_turn_separator, False))
            else:
                raise TemplateError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        return parts


ALPACA = PromptTemplate()
