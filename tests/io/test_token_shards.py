import os
import struct

import numpy as np
import pytest

from components.io.token_shards import (
    HEADER_SIZE,
    MAGIC,
    ShardFormatError,
    ShardWriter,
    dtype_for_vocab,
    read_shard,
    shard_header,
)


def write(path, docs, vocab_size, eot_id):
    with ShardWriter(path, vocab_size=vocab_size, eot_id=eot_id) as w:
        for doc in docs:
            w.write(doc)
    return path


def test_dtype_for_vocab_boundaries():
    assert dtype_for_vocab(4096) == np.uint16
    assert dtype_for_vocab(65536) == np.uint16  # ids 0..65535 still fit
    assert dtype_for_vocab(65537) == np.uint32
    assert dtype_for_vocab(70000) == np.uint32
    with pytest.raises(ValueError, match="positive"):
        dtype_for_vocab(0)


@pytest.mark.parametrize(("vocab_size", "itemsize"), [(4096, 2), (70000, 4)])
def test_round_trip_and_header(tmp_path, vocab_size, itemsize):
    rng = np.random.default_rng(0)
    eot = vocab_size - 1
    docs = [np.append(rng.integers(0, vocab_size - 1, size=n), eot) for n in (0, 5, 1000, 17)]
    docs.append([3, 1, 4, 1, 5, eot])  # plain lists work too
    path = write(tmp_path / "s.bin", docs, vocab_size, eot)

    tokens = read_shard(path)
    expected = np.concatenate([np.asarray(d) for d in docs])
    assert tokens.dtype.itemsize == itemsize
    np.testing.assert_array_equal(tokens, expected)
    assert int((tokens == eot).sum()) == 5  # one separator per document

    h = shard_header(path)
    assert (h.version, h.dtype.itemsize, h.n_tokens, h.vocab_size, h.eot_id) == (
        1,
        itemsize,
        expected.size,
        vocab_size,
        eot,
    )
    assert os.path.getsize(path) == HEADER_SIZE + expected.size * itemsize
    with open(path, "rb") as f:
        raw = f.read(32)
    assert raw[:8] == MAGIC
    assert struct.unpack("<IIQII", raw[8:32]) == (1, itemsize, expected.size, vocab_size, eot)


def test_uint32_shard_keeps_ids_above_65535(tmp_path):
    path = write(tmp_path / "big.bin", [[65535, 65536, 69999]], vocab_size=70000, eot_id=69999)
    assert read_shard(path).tolist() == [65535, 65536, 69999]


def test_memmap_is_read_only(tmp_path):
    tokens = read_shard(write(tmp_path / "s.bin", [[1, 2, 3]], 4096, 0))
    assert isinstance(tokens, np.memmap)
    with pytest.raises(ValueError, match="read-only"):
        tokens[0] = 7


def test_empty_shard(tmp_path):
    path = write(tmp_path / "empty.bin", [], 4096, 0)
    tokens = read_shard(path)
    assert tokens.shape == (0,) and tokens.dtype == np.uint16 and not tokens.flags.writeable
    assert shard_header(path).n_tokens == 0


def test_streaming_writes_many_small_arrays(tmp_path):
    path = tmp_path / "s.bin"
    with ShardWriter(path, vocab_size=50257, eot_id=50256) as w:
        for i in range(2000):
            w.write(np.arange(i % 50, dtype=np.int64))
        assert w.n_tokens == sum(i % 50 for i in range(2000))
        assert not path.exists()  # nothing under the final name until close
    assert read_shard(path).size == w.n_tokens


def test_out_of_range_ids_are_rejected(tmp_path):
    with ShardWriter(tmp_path / "s.bin", vocab_size=4096, eot_id=0) as w:
        with pytest.raises(ValueError, match=r"token id 4096 is outside the vocabulary 0..4095"):
            w.write([1, 4096])
        with pytest.raises(ValueError, match=r"token id -1 is outside"):
            w.write(np.array([-1, 2]))
        with pytest.raises(ValueError, match="flat integer"):
            w.write(np.array([1.5]))
    assert read_shard(tmp_path / "s.bin").size == 0  # rejected writes left nothing behind
    with pytest.raises(ValueError, match="eot_id 5000 is outside"):
        ShardWriter(tmp_path / "t.bin", vocab_size=4096, eot_id=5000)


def test_failure_inside_with_leaves_no_file_and_no_temp(tmp_path):
    path = tmp_path / "s.bin"
    write(path, [[9, 9, 9]], 4096, 0)  # an older complete shard stays as it was
    with pytest.raises(RuntimeError), ShardWriter(path, vocab_size=4096, eot_id=0) as w:
        w.write([1, 2])
        raise RuntimeError("tokenizer crashed")
    assert read_shard(path).tolist() == [9, 9, 9]
    assert sorted(os.listdir(tmp_path)) == ["s.bin"]


def test_rewrite_replaces_atomically(tmp_path):
    path = tmp_path / "s.bin"
    write(path, [[1, 2, 3]], 4096, 0)
    write(path, [[4, 5]], 4096, 0)
    assert read_shard(path).tolist() == [4, 5]
    assert os.listdir(tmp_path) == ["s.bin"]


# --- corrupt files ---------------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path):
    return write(tmp_path / "good.bin", [list(range(100))], 4096, 0)


def _patched(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    return path


def _truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def test_bad_magic(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello, this is not a shard" * 20)
    with pytest.raises(ShardFormatError, match=r"notes\.txt: bad magic b'hello, t'"):
        read_shard(path)


def test_truncated_header(good):
    for size in (100, 5, 0):  # each a prefix of the real header
        _truncate(good, size)
        with pytest.raises(ShardFormatError, match=rf"good\.bin: truncated: {size} bytes, shorter than"):
            read_shard(good)


def test_truncated_tokens(good):
    _truncate(good, HEADER_SIZE + 150)
    with pytest.raises(
        ShardFormatError, match=r"good\.bin: truncated: file has 406 bytes, header promises 100 tokens = 456"
    ):
        read_shard(good)


def test_trailing_bytes(good):
    with open(good, "ab") as f:
        f.write(b"\x00\x00")
    with pytest.raises(ShardFormatError, match="trailing bytes"):
        shard_header(good)


def test_version_mismatch(good):
    _patched(good, 8, struct.pack("<I", 2))
    with pytest.raises(ShardFormatError, match=r"good\.bin: format version 2, this code reads version 1"):
        read_shard(good)


def test_unknown_dtype_code_and_mismatched_vocab(good):
    _patched(good, 12, struct.pack("<I", 8))
    with pytest.raises(ShardFormatError, match="unknown dtype code 8"):
        read_shard(good)
    _patched(good, 12, struct.pack("<I", 2))
    _patched(good, 24, struct.pack("<I", 70000))
    with pytest.raises(ShardFormatError, match="dtype uint16 does not match vocab_size 70000"):
        read_shard(good)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.bin"):
        read_shard(tmp_path / "absent.bin")
