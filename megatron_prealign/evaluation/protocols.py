"""Named evaluation protocols of ``tools/evaluate.py translation|qa --protocol NAME``.

``default`` is this project's (short greedy answers cut at the first newline, BLEU with sacrebleu's
per-language tokenizer as the headline, spBLEU only with a local model). ``xllama`` reproduces
x-LLaMA's released evaluation (github.com/NJUNLP/x-LLM: ``inference.py``, ``data/*/``,
``eval/translation.bleu.py``, ``eval/xquad.match.py``) exactly:

* prompts: the Alpaca template; translation instruction 0 of x-LLM's 33 with its ISO 639 language
  names (``instruct/xllm_data.py``); QA: its per-language instruction and input;
* generation: greedy (``do_sample=False, num_beams=1``) until the end-of-sequence token, at most
  512 new tokens, the prediction stripped;
* translation: spBLEU = sacrebleu ``BLEU(tokenize="flores101", effective_order=True)`` with the
  user's local Flores-101 SentencePiece model (required: an error says where to get it);
* QA: containment match (the gold answer, lowercased, inside the lowercased prediction).

Every result records its protocol (name, prompt style, generation settings, headline metric).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple

from megatron_prealign.errors import EvaluationError


@dataclass(frozen=True)
class Protocol:
    name: str
    prompt_style: str  # instruct.templates style: "prealign" or "xllm"
    stop: Tuple[str, ...]  # strings that end an answer (the end-of-sequence token always does)
    max_new_tokens: Dict[str, int] = field(default_factory=dict)  # per subcommand
    translation_metric: str = "bleu"  # the headline score of a direction
    spm_tokenizer: Optional[str] = None  # fixed sacrebleu SPM tokenizer (None: --spm-tokenizer)
    qa_metric: str = "f1"
    exact: bool = False  # settings not to be changed by flags


PROTOCOLS = {
    "default": Protocol("default", "prealign", ("\n",), {"translation": 256, "qa": 64}),
    "xllama": Protocol("xllama", "xllm", (), {"translation": 512, "qa": 512}, translation_metric="spbleu",
                       spm_tokenizer="flores101", qa_metric="containment_accuracy", exact=True),
}


def resolve(args) -> Protocol:
    """The protocol of ``args`` (``--protocol``); fills ``args.max_new_tokens`` and refuses flags
    that would change an exact protocol."""
    protocol = PROTOCOLS[getattr(args, "protocol", None) or "default"]
    default_tokens = protocol.max_new_tokens[args.command]
    if protocol.exact:
        changed = []
        if args.max_new_tokens not in (None, default_tokens):
            changed.append(f"--max-new-tokens {args.max_new_tokens} (it generates up to {default_tokens})")
        if args.sample:
            changed.append("--sample (it decodes greedily)")
        if args.stop:
            changed.append("--stop (it generates until the end-of-sequence token)")
        if args.template:
            changed.append("--template (it uses the Alpaca template)")
        if getattr(args, "spm_tokenizer", None) not in (None, protocol.spm_tokenizer):
            changed.append(f"--spm-tokenizer {args.spm_tokenizer} (it uses {protocol.spm_tokenizer})")
        if getattr(args, "qa_instruction", None) or getattr(args, "qa_input_template", None):
            changed.append("--qa-instruction / --qa-input-template (it uses x-LLM's prompts)")
        if changed:
            raise EvaluationError(f"--protocol {protocol.name} is fixed; drop {'; '.join(changed)}, "
                                  "or use --protocol default")
    if args.max_new_tokens is None:
        args.max_new_tokens = default_tokens
    return protocol


def record(protocol: Protocol, args) -> dict:
    """What a result file says about its protocol."""
    out = {"name": protocol.name, "prompt_style": protocol.prompt_style, "stop": list(protocol.stop),
           "max_new_tokens": args.max_new_tokens}
    if args.command == "translation":
        out["headline_metric"] = protocol.translation_metric
    else:
        out["headline_metric"] = protocol.qa_metric
    out["definition"] = {k: v for k, v in asdict(protocol).items() if k not in ("name", "max_new_tokens")}
    return out
