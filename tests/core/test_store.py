"""The artifact store off the local disk: staging in and out, digests, the probe before a run, and
restaging a stage's inputs on another node. Against a real S3-compatible server (moto's), started and
stopped here, and memory://."""

from __future__ import annotations

import dataclasses
import http.server
import os
import threading
from pathlib import Path

import pytest
import s3fs

from components.core.artifacts import ArtifactStore, StoreError, stage_in, stage_out, tree_digest
from components.core.staging import StagedInputs, rebase, restage
from tests.cluster.local_cluster import BUCKET, S3Server, free_ports


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server; the process environment points S3 clients at it for this module."""
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "scratch"
    monkeypatch.setenv("GPTRECIPE_SCRATCH", str(path))
    return path


def write_tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 10)


def test_stage_out_uploads_and_stage_in_downloads_into_scratch_and_cleans_up(s3, scratch, tmp_path):
    uri = f"s3://{BUCKET}/t1/out"
    with stage_out(uri) as local:
        assert local.is_relative_to(scratch)
        write_tree(local)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert sorted(fs.find(f"{BUCKET}/t1/out")) == [f"{BUCKET}/t1/out/a.txt", f"{BUCKET}/t1/out/sub/b.bin"]
    with stage_in(uri) as copy:
        assert copy.is_relative_to(scratch) and copy.name == "out"
        assert (copy / "a.txt").read_text() == "alpha"
        assert (copy / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 10
    with stage_in(f"{uri}/a.txt") as one:
        assert one.read_text() == "alpha"
    assert [p for p in scratch.rglob("*") if p.is_file()] == []  # nothing left behind


def test_a_failed_block_uploads_nothing_and_a_rerun_replaces_what_an_interrupted_upload_left(s3, scratch):
    uri = f"s3://{BUCKET}/t2/out"
    with pytest.raises(RuntimeError), stage_out(uri) as local:
        (local / "half.txt").write_text("x")
        raise RuntimeError("the stage died")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert not fs.exists(f"{BUCKET}/t2/out")
    fs.pipe(f"{BUCKET}/t2/out/stale.txt", b"from an interrupted upload")
    with stage_out(uri) as local:
        (local / "fresh.txt").write_text("y")
    assert fs.find(f"{BUCKET}/t2/out") == [f"{BUCKET}/t2/out/fresh.txt"]


def test_a_local_store_stages_nothing(tmp_path, scratch):
    out = tmp_path / "store" / "out"
    with stage_out(str(out)) as local:
        assert local == out
        (local / "f.txt").write_text("z")
    with stage_in(str(out)) as copy:
        assert copy == out
    assert not scratch.exists() or not any(scratch.iterdir())


def test_digests_depend_on_content_only(s3, tmp_path):
    local = tmp_path / "tree"
    write_tree(local)
    remote = f"s3://{BUCKET}/t3/elsewhere/tree"
    store = ArtifactStore(f"s3://{BUCKET}/t3")
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        store.upload(path, f"{remote}/{path.relative_to(local).as_posix()}")
    local_digest = ArtifactStore(tmp_path).digest(str(local))
    assert store.digest(remote) == local_digest
    memory = ArtifactStore("memory://d")
    memory.write_bytes("memory://d/x/a.txt", b"alpha")
    assert memory.digest("memory://d/x/a.txt") == tree_digest(store.fs, f"{remote}/a.txt")
    (local / "a.txt").write_text("changed")
    assert ArtifactStore(tmp_path).digest(str(local)) != local_digest
    # An output with no file is an empty directory locally and nothing at all on S3: the same digest.
    (tmp_path / "empty").mkdir()
    assert store.digest(f"s3://{BUCKET}/t3/none") == ArtifactStore(tmp_path).digest(str(tmp_path / "empty"))


def test_the_probe_passes_on_a_usable_store_and_names_the_store_when_it_fails(s3, tmp_path):
    ArtifactStore(f"s3://{BUCKET}/store").check()
    ArtifactStore(tmp_path / "new" / "store").check()  # a local store is created
    with pytest.raises(
        StoreError, match=r"artifact store s3://no-such-bucket/store .* bucket does not exist"
    ):
        ArtifactStore("s3://no-such-bucket/store").check()


class RefusingS3(http.server.BaseHTTPRequestHandler):
    """What S3 answers every request signed with a key it does not know."""

    def _refuse(self) -> None:
        body = (
            b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InvalidAccessKeyId</Code><Message>The AWS "
            b"Access Key Id you provided does not exist in our records.</Message></Error>"
        )
        # An upload waits for "100 Continue" (Expect header); refused, its body is never sent.
        if self.headers.get("Expect", "").lower() != "100-continue":
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.close_connection = True
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _refuse

    def log_message(self, *args) -> None:
        pass


def test_bad_credentials_and_an_unreachable_endpoint_fail_the_probe(s3, monkeypatch):
    # fsspec keeps one S3 filesystem per set of arguments; the endpoint comes from the environment.
    monkeypatch.setattr(s3fs.S3FileSystem, "cachable", False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RefusingS3)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    try:
        expected = rf"s3://{BUCKET}/store \(endpoint {endpoint}\) is not usable: PermissionError"
        with pytest.raises(StoreError, match=expected):
            ArtifactStore(f"s3://{BUCKET}/store").check()
    finally:
        server.shutdown()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_ports(1)[0]}")  # nothing listens
    with pytest.raises(StoreError, match=r"is not usable: EndpointConnectionError"):
        ArtifactStore(f"s3://{BUCKET}/store").check()


@dataclasses.dataclass
class Plan:
    tokens: str
    shards: list[str]
    other: str
    path: Path


def test_restaging_rebases_a_plans_paths_onto_copies_on_this_node(s3, scratch):
    uri = f"s3://{BUCKET}/t4/tokens"
    with stage_out(uri) as local:
        write_tree(local)
    there = "/scratch/of/another/node/tokens"
    plan = Plan(there, [f"{there}/a.txt", f"{there}/sub/b.bin"], "/elsewhere/tokens-x", Path(there, "a.txt"))
    with restage(StagedInputs(node_id="another node", paths={there: uri})) as move:
        moved = move(plan)
        assert Path(moved.shards[0]).read_text() == "alpha"
        assert Path(moved.shards[1]).stat().st_size == 2560
        assert moved.path == Path(moved.tokens, "a.txt") and moved.other == "/elsewhere/tokens-x"
    assert not Path(moved.tokens).exists()  # the copies go when the block ends
    with restage(StagedInputs(node_id=None, paths={})) as move:  # a local store: nothing to move
        assert move(plan) is plan
    assert rebase({"k": [there + "2"]}, {there: "/here"}) == {"k": [there + "2"]}  # a prefix, not a path
