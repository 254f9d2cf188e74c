# megatron-prealign on NVIDIA's PyTorch container, which brings CUDA, NCCL, Transformer Engine
# and apex. Build: docker build -t megatron-prealign .
# Run:   docker run --gpus all --ipc=host --rm -it -v "$PWD/data:/data" megatron-prealign
# The base is the image megatron-core 0.19 is developed against (26.06, Python 3.12, a Transformer
# Engine inside setup.py's [gpu] range); its LTS image is 25.09-py3 (also Python 3.12):
# docker build --build-arg BASE_IMAGE=nvcr.io/nvidia/pytorch:25.09-py3 .
ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:26.06-py3
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
