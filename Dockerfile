# megatron-prealign on NVIDIA's PyTorch container, which brings CUDA, NCCL, Transformer Engine
# and apex. Build: docker build -t megatron-prealign .
# Run:   docker run --gpus all --ipc=host --rm -it -v "$PWD/data:/data" megatron-prealign
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.09-py3
FROM ${BASE_IMAGE}

# The container's pip constraints keep its own torch / TE / apex in place while we install.
WORKDIR /workspace/megatron-prealign
COPY setup.py README.md ./
COPY megatron_prealign ./megatron_prealign
RUN pip install --no-cache-dir --no-build-isolation -e .
COPY tools ./tools
COPY examples ./examples

ENTRYPOINT []
CMD ["bash"]
