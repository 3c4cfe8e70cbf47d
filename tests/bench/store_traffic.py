"""Bytes each stage moves to and from an S3 artifact store (prints figures, asserts nothing).

Starts moto's S3 server with a metering proxy in front of it, runs the smoke pipeline in-process with its
store on s3:// through the proxy, and sums request and response bodies by the object's key:

- written: bytes PUT under `stages/<stage>/` -- only that stage writes there (outputs, its Ray Train
  checkpoints, per-shard work);
- read: bytes GET from `stages/<stage>/` -- by whoever reads that stage's outputs: its consumers staging
  them in, digests, and the stage itself resuming.

    python tests/bench/store_traffic.py [--config smoke] [key.sub=value ...]
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.cluster.local_cluster import BUCKET, S3Server, free_ports  # noqa: E402


class Meter:
    """Bytes up and down per area of the store (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.written: dict[str, int] = defaultdict(int)
        self.read: dict[str, int] = defaultdict(int)
        self.requests = 0

    @staticmethod
    def area(path: str) -> str:
        parts = urlsplit(path).path.strip("/").split("/")
        if len(parts) >= 4 and parts[:3] == [BUCKET, "store", "stages"]:
            return parts[3]
        if len(parts) >= 3 and parts[1] == "store" and parts[2].startswith(".tmp-probe"):
            return "store/(probe)"
        return "/".join(parts[1:3]) or "(bucket)"

    def add(self, path: str, up: int, down: int) -> None:
        with self.lock:
            self.requests += 1
            self.written[self.area(path)] += up
            self.read[self.area(path)] += down


def proxy(meter: Meter, upstream: tuple[str, int]) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _forward(self) -> None:
            body = self._body()
            conn = http.client.HTTPConnection(*upstream, timeout=120)
            # Forward the body framed as it came (botocore streams aws-chunked uploads with HTTP chunking).
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request(
                self.command, self.path, body=iter([body]) if chunked else body, headers=headers,
                encode_chunked=chunked,
            )  # fmt: skip
            response = conn.getresponse()
            data = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                # A HEAD's Content-Length is the object's size, not this (empty) body's.
                if key.lower() in ("transfer-encoding", "connection") or (
                    key.lower() == "content-length" and self.command != "HEAD"
                ):
                    continue
                self.send_header(key, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()
            meter.add(self.path, len(body) if self.command in ("PUT", "POST") else 0,
                      len(data) if self.command == "GET" else 0)  # fmt: skip

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

    port = free_ports(1)[0]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def mb(n: int) -> str:
    return f"{n / 2**20:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="smoke")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="traffic-"))
    s3 = S3Server(root / "s3").start()
    meter = Meter()
    server = proxy(meter, ("127.0.0.1", s3.port))
    env = {**os.environ, **s3.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}"}
    env["GPTRECIPE_SCRATCH"] = str(root / "scratch")
    command = [str(Path(sys.executable).parent / "gptrecipe"), "run", args.config]
    command += [f"pipeline.store=s3://{BUCKET}/store", f"pipeline.runs_dir={root / 'runs'}"]
    command += [f"pipeline.tracking_uri=sqlite:///{root / 'mlflow.db'}", *args.overrides]
    try:
        started = time.monotonic()
        proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"the pipeline failed ({proc.returncode})")
        summary = json.loads(next((root / "runs").glob("*/summary.json")).read_text())
    finally:
        server.shutdown()
        s3.stop()
    print(f"{args.config} on S3 through a metering proxy: {wall:.1f} s, {meter.requests} requests")
    print("written: into the stage's own directory; read: from it, by the stage and its consumers")
    print(f"{'stage':<18} {'written MB':>11} {'read MB':>9} {'seconds':>8}")
    others = (set(meter.written) | set(meter.read)) - set(summary["stages"])
    areas = [*summary["stages"], *sorted(others)]
    for area in areas:
        seconds = summary["stages"].get(area, {}).get("duration_s")
        shown = f"{seconds:8.1f}" if seconds is not None else f"{'':8}"
        print(f"{area:<18} {mb(meter.written[area]):>11} {mb(meter.read[area]):>9} {shown}")
    total_w, total_r = sum(meter.written.values()), sum(meter.read.values())
    print(f"{'total':<18} {mb(total_w):>11} {mb(total_r):>9}")


if __name__ == "__main__":
    main()
