"""x-LLaMA beyond the instruction-tuning stage itself: the translation-data scaling law and the
allocation of a translation-data budget over languages (:mod:`.scaling_law`). The synthetic
target languages of the x-LLaMA miniature live with the demo (``megatron_prealign.demo``)."""
