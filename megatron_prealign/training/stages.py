"""The stages of a run as one schedule, so every configuration of the paper is the same loop.

    iterations 1 .. P            "prealign"   alignment loss + auxiliary LM loss (Eq. 4)
    iterations P+1 .. P+T        "pretrain"   LM loss (+ alignment loss when on the fly)
    iterations P+T+1 .. P+T+Q    "postalign"  alignment loss + auxiliary LM loss

PreAlign: P > 0 on input-only codeswitched data. Joint Training: P = Q = 0, no alignment.
On-the-fly alignment: alignment during pretraining. Post alignment: Q > 0.
Instruction tuning (--sft / --sft-packing): the T iterations are the stage "finetune".
"""

import dataclasses

PREALIGN, PRETRAIN, POSTALIGN, FINETUNE = "prealign", "pretrain", "postalign", "finetune"


@dataclasses.dataclass(frozen=True)
class StagePlan:
    prealign_iters: int
    train_iters: int
    postalign_iters: int = 0
    align_during_pretraining: bool = False
    train_stage: str = PRETRAIN  # FINETUNE for instruction tuning

    @property
    def total_iters(self) -> int:
        return self.prealign_iters + self.train_iters + self.postalign_iters

    def stage(self, iteration: int) -> str:
        """Stage of the (1-based) iteration."""
        if not 1 <= iteration <= self.total_iters:
            raise ValueError(f"iteration {iteration} is outside 1..{self.total_iters}")
        if iteration <= self.prealign_iters:
            return PREALIGN
        if iteration <= self.prealign_iters + self.train_iters:
            return self.train_stage
        return POSTALIGN

    def aligns(self, stage: str) -> bool:
        return stage in (PREALIGN, POSTALIGN) or self.align_during_pretraining

    @property
    def uses_alignment(self) -> bool:
        return self.prealign_iters > 0 or self.postalign_iters > 0 or self.align_during_pretraining
