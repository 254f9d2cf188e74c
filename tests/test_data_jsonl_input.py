"""Blocks of whole lines (what preprocessing and word counting hand to workers) against reading
the files line by line."""

import random

import pytest

from megatron_prealign.data.jsonl_input import iter_line_blocks


def _naive(paths):
    document = 0
    for path in paths:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if raw.strip():
                    yield document, (path, number, raw.rstrip(b"\n"))
                    document += 1


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 1 << 16])
def test_blocks_hold_every_line_once_with_its_number_and_document_index(tmp_path, block_bytes):
    rng = random.Random(block_bytes)
    pieces = [b"", b" ", b"\t", b"\r", b'{"text": "a"}', b'{"text": "' + b"x" * 300 + b'"}', b"\xff\xfe"]
    paths = []
    for i, ends_with_newline in enumerate([True, False, True]):
        lines = [rng.choice(pieces) for _ in range(rng.randint(0, 40))]
        path = tmp_path / f"in{i}.jsonl"
        path.write_bytes(b"\n".join(lines) + (b"\n" if ends_with_newline and lines else b""))
        paths.append(str(path))
    blocks = list(iter_line_blocks(paths, block_bytes, first_block_bytes=max(1, block_bytes // 4)))
    got = [line for block in blocks for line in block.lines()]
    assert got == list(_naive(paths))
    assert all(block.documents == len(block.lines()) for block in blocks)
    for path in paths:  # the blocks of a file are the file
        with open(path, "rb") as handle:
            assert b"".join(b.data for b in blocks if b.path == path) == handle.read()
