"""Evaluations of checkpoints (``tools/evaluate.py SUBCOMMAND``; docs/evaluation.md):

* :mod:`perplexity` — token-level perplexity per language / source;
* :mod:`alignment_similarity` — per-layer cosine similarity of aligned vs random word pairs,
  seen / unseen in pre-alignment, with a plot;
* :mod:`clka` — multiple-choice knowledge application by likelihood, Wilson 95% interval;
* :mod:`clka_dynamics` — CLKA per training period x fact frequency x (training, test)
  language at each period's checkpoint, with a plot (PreAlign Figure 4);
* :mod:`mixed_script` — share of generated continuations with other-language tokens;
* :mod:`translation`, :mod:`qa` — generated translations (BLEU / chrF++ / spBLEU / COMET) and
  answers (containment, MLQA EM / F1), or scored from ``--predictions``;
* :mod:`representation` — per-layer similarity and retrieval of parallel sentences;
* :mod:`classification` — ZS-CLT by label-word likelihood, prompt-only or after fine-tuning;
  :mod:`downstream` runs these four.

:mod:`model_loading` builds a checkpoint's architecture at any TP / PP layout and loads its
weights (resharded); :mod:`cli` is the command line.
"""
