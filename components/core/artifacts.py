"""Artifacts and the artifact store.

An artifact is a small manifest `{uri, kind, digest, meta}` that points at a file or a directory in
the artifact store; stages pass artifacts, never bulk data. The store is a local directory or any
fsspec URL (s3://bucket/prefix with the `s3` extra, gs://, memory:// in tests). Every write that
must look finished only when it is finished goes through a temporary name and a rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import fsspec
import xxhash
from pydantic import Field

from components.core.config import StrictModel

TMP_PREFIX = ".tmp-"  # temporary names; never part of a digest, never mistaken for output


class Artifact(StrictModel):
    """A named output of a stage: where it is, what it is, and a digest of its content."""

    uri: str = Field(description="Absolute local path or fsspec URL of a file or directory.")
    kind: str = Field(description="What the artifact holds, e.g. 'warc', 'documents', 'tokens', 'model'.")
    digest: str = Field(description="Content digest ('xxh128:...'); equal digests mean equal content.")
    meta: dict[str, Any] = Field(default_factory=dict, description="Small facts about it (counts, schema).")


def _is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


class ArtifactStore:
    """The root under which stages keep their outputs: `<root>/stages/<stage>/<cache key>/...`."""

    def __init__(self, root: str | Path):
        root = str(root)
        if root.startswith("file://"):
            root = root[len("file://") :]
        self.root = root if _is_url(root) else str(Path(root).expanduser().resolve())
        self.fs, _ = fsspec.core.url_to_fs(self.root)
        self.is_local = not _is_url(self.root)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    # -- naming ---------------------------------------------------------------------------------

    def uri(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if not self.is_local else str(Path(self.root, *parts))

    @staticmethod
    def join(uri: str, *parts: str) -> str:
        return posixpath.join(uri, *parts) if _is_url(uri) else str(Path(uri, *parts))

    def local_path(self, uri: str) -> Path:
        """The local path of a URI in a local store; stages that need real files on a remote store
        should use `download`/`upload` instead."""
        if _is_url(uri):
            raise ValueError(f"{uri} is not on the local filesystem; download it first")
        return Path(uri)

    # -- reading and writing ---------------------------------------------------------------------

    def exists(self, uri: str) -> bool:
        return self.fs.exists(uri)

    def makedirs(self, uri: str) -> None:
        self.fs.makedirs(uri, exist_ok=True)

    def open(self, uri: str, mode: str = "rb") -> IO:
        return self.fs.open(uri, mode)

    def listdir(self, uri: str) -> list[str]:
        """Names (not paths) directly under `uri`, sorted, without temporary files."""
        if not self.fs.exists(uri):
            return []
        names = [posixpath.basename(p.rstrip("/")) for p in self.fs.ls(uri, detail=False)]
        return sorted(n for n in names if not n.startswith(TMP_PREFIX))

    def read_json(self, uri: str) -> Any:
        with self.fs.open(uri, "r") as f:
            return json.load(f)

    def write_bytes(self, uri: str, data: bytes) -> None:
        with self.atomic_write(uri) as f:
            f.write(data)

    def write_json(self, uri: str, data: Any, sort_keys: bool = True) -> None:
        text = json.dumps(data, indent=2, sort_keys=sort_keys, default=str)
        self.write_bytes(uri, (text + "\n").encode())

    @contextlib.contextmanager
    def atomic_write(self, uri: str) -> Iterator[IO[bytes]]:
        """Write a file that appears under its name only once complete.

        Locally: a temporary file in the same directory, fsync'd, then renamed over the target.
        On object stores a single PUT is already all-or-nothing, so we write directly.
        """
        if not self.is_local:
            with self.fs.open(uri, "wb") as f:
                yield f
            return
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{path.name}")
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self, uri: str) -> None:
        if self.fs.exists(uri):
            self.fs.rm(uri, recursive=True)

    def upload(self, local: Path, uri: str) -> None:
        """Copy a local file or directory into the store (a plain rename target for local stores)."""
        if self.is_local:
            dest = Path(uri)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if local.is_dir():
                shutil.copytree(local, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(local, dest)
        else:
            self.fs.put(str(local), uri, recursive=local.is_dir())

    @contextlib.contextmanager
    def as_local(self, uri: str) -> Iterator[Path]:
        """A local path holding the content at `uri` (the path itself for local stores, a temporary
        download otherwise) -- for libraries that only read real files (fastText, safetensors)."""
        if self.is_local or not _is_url(uri):
            yield Path(uri)
            return
        with tempfile.TemporaryDirectory(prefix="gptrecipe-") as tmp:
            dest = Path(tmp, posixpath.basename(uri.rstrip("/")))
            self.fs.get(uri, str(dest), recursive=self.fs.isdir(uri))
            yield dest

    # -- digests ---------------------------------------------------------------------------------

    def digest(self, uri: str) -> str:
        """Content digest of a file, or of a directory tree (relative names + file contents).

        xxh3-128 rather than sha256: it is a cache key, not a signature, and it runs at memory speed
        on multi-GB token shards.
        """
        h = xxhash.xxh3_128()
        if self.fs.isdir(uri):
            base = uri.rstrip("/")
            files = sorted(p for p in self.fs.find(uri) if TMP_PREFIX not in p)
            for path in files:
                rel = path[len(base) :].lstrip("/") if path.startswith(base) else path
                h.update(rel.encode() + b"\0" + self._file_digest(path).encode() + b"\n")
        else:
            h.update(self._file_digest(uri).encode())
        return f"xxh128:{h.hexdigest()}"

    def _file_digest(self, path: str) -> str:
        h = xxhash.xxh3_128()
        with self.fs.open(path, "rb") as f:
            while chunk := f.read(4 << 20):
                h.update(chunk)
        return h.hexdigest()
