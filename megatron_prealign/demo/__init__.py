"""`make demo`: the papers' results in miniature on built-in data (`python -m megatron_prealign.demo`).

* :mod:`.data` — the built-in synthetic English (grammar + facts about invented people);
* :mod:`.prealign` — the PreAlign En-Clone experiment (Joint Training vs PreAlign);
* :mod:`.xllama_data` — two synthetic target languages, instruction / translation / QA data;
* :mod:`.xllama` — the x-LLaMA miniature (English-only vs CoIT, the scaling law, allocation).
* :mod:`.real` (+ :mod:`.real_report`) — English -> German on real Debian text (``--only real``).
* :mod:`.clka_dynamics` (+ :mod:`.clka_dynamics_data`) — PreAlign Figure 4, CLKA after each
  training period per fact frequency and language pair (``--only clka-dynamics``).
"""

import os
import shutil

from megatron_prealign.cli import quiet_notes

quiet_notes()  # the demo is an entry point (python -m megatron_prealign.demo)


def fresh_directory(path: str) -> str:
    """An empty directory at ``path``: a demo runs from scratch (deterministic), so a previous
    run's directory is removed."""
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    return path
