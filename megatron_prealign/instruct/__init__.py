"""Instruction tuning (x-LLaMA): prompt templates, instruction datasets, the fine-tuning stage."""
