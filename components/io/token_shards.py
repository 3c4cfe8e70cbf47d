"""Token shards: flat binary files of token ids that the training loop memory-maps.

Layout (all integers little-endian)::

    offset  size  field
         0     8  magic        b"GPTRTOK\\x00"
         8     4  version      uint32, currently 1
        12     4  dtype code   uint32: 2 = uint16 ids, 4 = uint32 ids (the item size in bytes)
        16     8  n_tokens     uint64, number of token ids after the header
        24     4  vocab_size   uint32, size of the tokenizer's vocabulary (every id is below it)
        28     4  eot_id       uint32, id of <|endoftext|>, which ends every document
        32   224  reserved     zeros
       256     -  tokens       n_tokens ids of the dtype above, documents back to back

Ids are uint16 when the vocabulary fits (vocab_size <= 65536: half the disk and page cache), else uint32.
The header is a fixed 256 bytes so the token array starts page-cache friendly and aligned for either
dtype, and the file size is fully determined by the header -- a truncated copy is detected, not read
as a shorter shard. A shard is written to a temporary file and renamed into place when complete, so a
file under the final name is always whole.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

import numpy as np

MAGIC = b"GPTRTOK\x00"
VERSION = 1
HEADER_SIZE = 256
_HEADER = struct.Struct("<8sIIQII")  # magic, version, dtype code, n_tokens, vocab_size, eot_id
_DTYPE_CODES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


class ShardFormatError(ValueError):
    """A file that is not a valid token shard; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ShardHeader:
    version: int
    dtype: np.dtype
    n_tokens: int
    vocab_size: int
    eot_id: int


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """Smallest little-endian unsigned dtype that holds ids 0..vocab_size-1 (uint16 or uint32)."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if vocab_size <= 1 << 16:
        return np.dtype("<u2")
    if vocab_size < 1 << 32:  # the header stores vocab_size as uint32
        return np.dtype("<u4")
    raise ValueError(f"vocab_size {vocab_size} does not fit in uint32 token ids")


def _pack_header(dtype: np.dtype, n_tokens: int, vocab_size: int, eot_id: int) -> bytes:
    head = _HEADER.pack(MAGIC, VERSION, dtype.itemsize, n_tokens, vocab_size, eot_id)
    return head.ljust(HEADER_SIZE, b"\x00")


class ShardWriter:
    """Stream token ids into one shard in constant memory.

    >>> with ShardWriter("train_000.bin", vocab_size=4096, eot_id=4082) as w:
    ...     for ids in encode_batch(tok, texts):
    ...         w.write(ids)

    Ids go to a temporary file beside `path` (same file system, so the final rename is atomic) through an
    ordinary buffered file; `close()` writes the header and renames. If the `with` block raises, the
    temporary file is deleted and `path` is left untouched.
    """

    def __init__(self, path: str | os.PathLike[str], vocab_size: int, eot_id: int) -> None:
        self.path = os.fspath(path)
        self.dtype = dtype_for_vocab(vocab_size)
        if not 0 <= eot_id < vocab_size:
            raise ValueError(f"eot_id {eot_id} is outside the vocabulary 0..{vocab_size - 1}")
        self.vocab_size = vocab_size
        self.eot_id = eot_id
        self.n_tokens = 0
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, self._tmp_path = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(self.path)}.", suffix=".tmp"
        )
        self._file: BinaryIO | None = os.fdopen(fd, "wb", buffering=1 << 20)
        # Zeros, not a real header: if the process dies, the temp file does not even look like a shard.
        self._file.write(b"\x00" * HEADER_SIZE)

    def write(self, ids: np.ndarray | list[int]) -> None:
        """Append token ids (a list or an integer array); each must be in 0..vocab_size-1."""
        if self._file is None:
            raise ValueError(f"shard writer for {self.path} is closed")
        arr = np.asarray(ids)
        if arr.size == 0:
            return
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise ValueError(
                f"token ids must be a flat integer sequence, got {arr.dtype} of shape {arr.shape}"
            )
        # A silent wrap-around in the cast to uint16 would corrupt training data, so check the range.
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(
                f"token id {lo if lo < 0 else hi} is outside the vocabulary 0..{self.vocab_size - 1} "
                f"(writing {self.path})"
            )
        arr = arr.astype(self.dtype, copy=False)
        self._file.write(np.ascontiguousarray(arr).data)
        self.n_tokens += arr.size

    def close(self) -> None:
        """Finish the header, flush to disk and move the shard to its final name."""
        if self._file is None:
            return
        f, self._file = self._file, None
        try:
            f.flush()
            f.seek(0)
            f.write(_pack_header(self.dtype, self.n_tokens, self.vocab_size, self.eot_id))
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(self._tmp_path, self.path)
        except BaseException:
            f.close()
            _remove_quietly(self._tmp_path)
            raise

    def abort(self) -> None:
        """Drop everything written so far; `path` is not created or changed."""
        if self._file is not None:
            self._file.close()
            self._file = None
            _remove_quietly(self._tmp_path)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def shard_header(path: str | os.PathLike[str]) -> ShardHeader:
    """Read and validate a shard's header, including that the file size matches it."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read(HEADER_SIZE)
        size = os.fstat(f.fileno()).st_size
    if len(raw) < len(MAGIC) and MAGIC.startswith(raw):
        raise ShardFormatError(f"{path}: truncated: {size} bytes, shorter than the {HEADER_SIZE}-byte header")
    if raw[: len(MAGIC)] != MAGIC:
        raise ShardFormatError(
            f"{path}: bad magic {raw[: len(MAGIC)]!r} (expected {MAGIC!r}); not a gptrecipe token shard"
        )
    if len(raw) < HEADER_SIZE:
        raise ShardFormatError(f"{path}: truncated: {size} bytes, shorter than the {HEADER_SIZE}-byte header")
    _, version, code, n_tokens, vocab_size, eot = _HEADER.unpack_from(raw)
    if version != VERSION:
        raise ShardFormatError(f"{path}: format version {version}, this code reads version {VERSION}")
    dtype = _DTYPE_CODES.get(code)
    if dtype is None:
        raise ShardFormatError(f"{path}: unknown dtype code {code} (expected 2 for uint16 or 4 for uint32)")
    if vocab_size < 1 or dtype != dtype_for_vocab(vocab_size):
        raise ShardFormatError(f"{path}: dtype {dtype.name} does not match vocab_size {vocab_size}")
    if eot >= vocab_size:
        raise ShardFormatError(f"{path}: eot_id {eot} is outside the vocabulary of {vocab_size}")
    expected = HEADER_SIZE + n_tokens * dtype.itemsize
    if size != expected:
        what = "truncated" if size < expected else "trailing bytes"
        raise ShardFormatError(
            f"{path}: {what}: file has {size} bytes, header promises {n_tokens} tokens = {expected} bytes"
        )
    return ShardHeader(version=version, dtype=dtype, n_tokens=n_tokens, vocab_size=vocab_size, eot_id=eot)


def read_shard(path: str | os.PathLike[str]) -> np.ndarray:
    """The shard's token ids as a read-only `np.memmap` (pages load on access; nothing is copied).

    An empty shard gives an empty read-only array instead, because a zero-length file region cannot
    be memory-mapped.
    """
    header = shard_header(path)
    if header.n_tokens == 0:
        empty = np.zeros(0, dtype=header.dtype)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=header.dtype, mode="r", offset=HEADER_SIZE, shape=(header.n_tokens,))
