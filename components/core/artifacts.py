"""Artifacts and the artifact store.

An artifact is a small manifest `{uri, kind, digest, meta}` that points at a file or a directory in
the artifact store; stages pass artifacts, never bulk data. The store is a local directory or any
fsspec URL (s3://bucket/prefix, gs://, memory:// in tests); S3's endpoint and credentials come from the
usual AWS variables and files (`AWS_ENDPOINT_URL` for S3-compatible servers such as MinIO).

Code that needs real files never assumes the store is a local disk:

- `stage_in(uri)` gives a local path holding the content at `uri`: the path itself on a local store, a
  download into node-local scratch (`scratch_root()`) otherwise, removed when the block ends;
- `stage_out(uri)` gives a local directory to write into: the destination itself on a local store,
  scratch otherwise, uploaded when the block ends without an error (replacing whatever an interrupted
  earlier upload left at `uri`).

Every write that must look finished only when it is finished goes through a temporary name and a
rename locally; on object stores a single PUT is already all-or-nothing.
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

from components.core.config import ConfigError, StrictModel

TMP_PREFIX = ".tmp-"  # temporary names; never part of a digest, never mistaken for output


class Artifact(StrictModel):
    """A named output of a stage: where it is, what it is, and a digest of its content."""

    uri: str = Field(description="Absolute local path or fsspec URL of a file or directory.")
    kind: str = Field(description="What the artifact holds, e.g. 'warc', 'documents', 'tokens', 'model'.")
    digest: str = Field(description="Content digest ('xxh128:...'); equal digests mean equal content.")
    meta: dict[str, Any] = Field(default_factory=dict, description="Small facts about it (counts, schema).")


def _is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def filesystem(location: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) of a local path or URL. Directory listings are not cached on object stores:
    other processes (Ray tasks, workers on other nodes) write into the same prefixes, and a stale
    listing would hide their files."""
    if _is_url(location) and not location.startswith("memory://"):
        return fsspec.core.url_to_fs(location, use_listings_cache=False)
    return fsspec.core.url_to_fs(location)


SCRATCH_ENV = "GPTRECIPE_SCRATCH"


def scratch_root() -> Path:
    """This node's scratch directory for staged inputs and outputs: $GPTRECIPE_SCRATCH (a node-local
    disk on a cluster), else the system's temporary directory."""
    root = Path(os.environ.get(SCRATCH_ENV) or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return root


def scratch_dir(prefix: str = "gptrecipe-") -> tempfile.TemporaryDirectory:
    """A temporary directory in node-local scratch, removed when its block ends."""
    return tempfile.TemporaryDirectory(prefix=prefix, dir=scratch_root())


def _remote_files(fs: fsspec.AbstractFileSystem, uri: str) -> list[tuple[str, str]]:
    """(path in the filesystem, name relative to `uri`) of every file at `uri`, temporaries left out;
    one file gives one pair with the relative name ''. Nothing at `uri` is an empty directory: object
    stores have no empty directories, so an output that holds no file exists only on a local disk."""
    base = fs._strip_protocol(uri).rstrip("/")
    if not fs.isdir(uri):
        return [(base, "")] if fs.exists(uri) else []
    return [
        (path, path[len(base) :].lstrip("/"))
        for path in sorted(fs.find(uri))
        if TMP_PREFIX not in path[len(base) :]
    ]


@contextlib.contextmanager
def stage_in(uri: str) -> Iterator[Path]:
    """A local path holding the content (file or directory) at `uri`, for libraries that only read
    real files (memory maps, safetensors, fastText). Remote content is downloaded into node-local
    scratch and removed when the block ends."""
    if not _is_url(uri):
        yield Path(uri[len("file://") :] if uri.startswith("file://") else uri)
        return
    fs, _ = filesystem(uri)
    files = _remote_files(fs, uri)
    with scratch_dir("stage-in-") as tmp:
        dest = Path(tmp, posixpath.basename(uri.rstrip("/")))
        if len(files) == 1 and files[0][1] == "":
            fs.get_file(files[0][0], str(dest))
        else:
            dest.mkdir()
            for path, rel in files:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(path, str(dest / rel))
        yield dest


@contextlib.contextmanager
def stage_out(uri: str, within: Path | None = None) -> Iterator[Path]:
    """A local directory whose content becomes the directory at `uri` when the block ends without an
    error: the destination itself on a local store (created), a scratch directory uploaded file by file
    otherwise -- a temporary one, or one under `within` that the caller removes (so the files can
    still be read after the upload). Whatever an interrupted earlier upload left at `uri` is removed
    first, so a rerun never mixes old and new files."""
    if not _is_url(uri):
        path = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    fs, _ = filesystem(uri)
    with contextlib.ExitStack() as stack:
        parent = within or Path(stack.enter_context(scratch_dir("stage-out-")))
        local = Path(tempfile.mkdtemp(prefix="out-", dir=parent), posixpath.basename(uri.rstrip("/")))
        local.mkdir()
        yield local
        if fs.exists(uri):
            fs.rm(uri, recursive=True)
        base = fs._strip_protocol(uri).rstrip("/")
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            fs.put_file(str(file), f"{base}/{file.relative_to(local).as_posix()}")


def tree_digest(fs: fsspec.AbstractFileSystem, uri: str) -> str:
    """Content digest of a file, or of a directory tree (relative names + file contents); the same
    content gives the same digest on any filesystem and under any prefix.

    xxh3-128 rather than sha256: it is a cache key, not a signature, and it runs at memory speed on
    multi-GB token shards."""
    h = xxhash.xxh3_128()
    for path, rel in _remote_files(fs, uri):
        file_hash = xxhash.xxh3_128()
        with fs.open(path, "rb") as f:
            while chunk := f.read(4 << 20):
                file_hash.update(chunk)
        if rel:
            h.update(rel.encode() + b"\0" + file_hash.hexdigest().encode() + b"\n")
        else:
            h.update(file_hash.hexdigest().encode())
    return f"xxh128:{h.hexdigest()}"


class StoreError(ConfigError):
    """The artifact store cannot be used (unreachable, no such bucket, no access)."""


def _reason(error: BaseException) -> str:
    """The first line of an error from fsspec, s3fs or botocore, with its kind."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class ArtifactStore:
    """The root under which stages keep their outputs: `<root>/stages/<stage>/<cache key>/...`."""

    def __init__(self, root: str | Path):
        root = str(root)
        if root.startswith("file://"):
            root = root[len("file://") :]
        self.root = root if _is_url(root) else str(Path(root).expanduser().resolve())
        self.fs, _ = filesystem(self.root)
        self.is_local = not _is_url(self.root)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    # -- naming ---------------------------------------------------------------------------------

    def uri(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if not self.is_local else str(Path(self.root, *parts))

    @staticmethod
    def join(uri: str, *parts: str) -> str:
        return posixpath.join(uri, *parts) if _is_url(uri) else str(Path(uri, *parts))

    def check(self) -> None:
        """Write, read back and delete a small probe object under the root, so that an unreachable
        store, a missing bucket or bad credentials stop a run before any work, naming the store."""
        probe = self.uri(f"{TMP_PREFIX}probe-{uuid.uuid4().hex[:8]}")
        try:
            if self.is_local:
                Path(self.root).mkdir(parents=True, exist_ok=True)
            with self.fs.open(probe, "wb") as f:
                f.write(b"ok")
            with self.fs.open(probe, "rb") as f:
                if f.read() != b"ok":
                    raise OSError("a probe object read back different bytes")
            self.fs.rm(probe)
        except Exception as e:
            endpoint = os.environ.get("AWS_ENDPOINT_URL")
            where = f" (endpoint {endpoint})" if endpoint and self.root.startswith("s3://") else ""
            raise StoreError(f"artifact store {self.root}{where} is not usable: {_reason(e)}") from None

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
        """Copy one local file into the store."""
        if self.is_local:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(local, uri)
        else:
            self.fs.put_file(str(local), uri)

    def digest(self, uri: str) -> str:
        return tree_digest(self.fs, uri)
