"""The command-line tools (`prealign-*` console scripts; `tools/*.py` wrap them)."""
