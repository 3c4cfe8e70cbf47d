"""A cluster on one machine: an S3 server, an MLflow tracking server and a multi-node Ray cluster, each a
real server in its own process session, for the tests and for trying the cluster path on a laptop.

    with LocalCluster() as cluster:       # or: python tests/cluster/local_cluster.py (prints the env)
        cluster.job_address, cluster.token, cluster.tracking_uri, cluster.store_url, cluster.s3_env

- S3: moto's server on 127.0.0.1, bucket `gptrecipe`; clients reach it through AWS_ENDPOINT_URL (botocore,
  s3fs and pyarrow's S3FileSystem all honour it) with fake credentials.
- MLflow: `mlflow server` on a SQLite backend, artifacts proxied to s3://gptrecipe/mlflow, bound to
  127.0.0.2 -- not localhost, as a pod addresses the server by a name -- so it needs `--allowed-hosts`
  (MLflow 3 answers any other Host header with 403 "Invalid Host header").
- Ray: a head with no CPUs (like infra/k8s/raycluster.yaml: the head runs the drivers, stages go to the
  workers) and two worker nodes, each a separate `ray start --block` with its own temp dir, TMPDIR and
  GPTRECIPE_SCRATCH, token auth on. Every node advertises its own loopback address (127.0.0.11, .12,
  ...): `ray start` replaces 127.0.0.1 by the machine's outward address, which these tests must not use.

Every process is stopped by its process group (SIGTERM, then SIGKILL after a bounded wait) and by the
pids of its descendants that left the group (Ray's workers start their own sessions) -- never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

BIN = Path(sys.executable).parent
BUCKET = "gptrecipe"
REGION = "us-east-1"
# Ray's agents on every node; each gets its own port, or nodes on one machine collide (and the test
# session's in-process Ray already holds the defaults).
RAY_NODE_PORT_FLAGS = (
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
)


_handed_out: set[int] = set()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` free TCP ports on `host`, none of them handed out before by this process.

    The ports are released when chosen and bound later by the servers, so two calls could otherwise
    return the same port (the head's GCS port and, a call later, its metrics-export port did, and
    `ray start` refused to start)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            s = stack.enter_context(socket.socket())  # held until the end: never the same twice here
            s.bind((host, 0))
            port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                ports.append(port)
        return ports


def wait_until(ready: Callable[[], bool], timeout: float, what: str, watch: Iterable[Process] = ()) -> None:
    """Poll `ready` until it is true; fail after `timeout` s, or at once if a watched process exits."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if ready():
                return
        for proc in watch:
            if not proc.running():
                raise RuntimeError(
                    f"{proc.name} exited (code {proc.popen.returncode}) before {what}:\n{proc.log_tail()}"
                )
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}:\n{p.log_tail()}" for p in watch)
            raise TimeoutError(f"{what}: not within {timeout:.0f} s\n{tails}")
        time.sleep(0.25)


def http_status(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> int:
    """The HTTP status of a GET (an error status too); OSError if nothing answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _proc_table() -> dict[int, tuple[int, int, str, int]]:
    """pid -> (ppid, pgid, state, start time) of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[0], int(fields[19]))
    return table


def pid_gone(pid: int, start: int | None = None) -> bool:
    """True if `pid` has exited: no such process, a zombie, or another process now under that pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0] in "ZX" or (start is not None and int(fields[19]) != start)


class Process:
    """One server process, started in its own session (so its process group is its own) with its
    output in a log file."""

    def __init__(
        self, name: str, argv: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None
    ):
        self.name, self.argv, self.log = name, argv, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file: IO[bytes] = log.open("ab")
        self.popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.pgid = self.popen.pid  # a session leader leads its own process group
        self.seen: dict[int, int] = {}  # every (pid -> start time) seen in its tree, for stop and checks

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def tree(self) -> dict[int, int]:
        """pid -> start time of the processes now in its group or descended from it (Ray's workers call
        setsid, so they leave the group but stay descendants until their parent dies)."""
        table = _proc_table()
        members = {pid for pid, (_, pgid, _, _) in table.items() if pgid == self.pgid}
        members.add(self.pid)
        grew = True
        while grew:
            new = {pid for pid, (ppid, _, _, _) in table.items() if ppid in members} - members
            members |= new
            grew = bool(new)
        found = {pid: table[pid][3] for pid in members if pid in table}
        self.seen.update(found)
        return found

    def remaining(self) -> dict[int, int]:
        return {pid: start for pid, start in self.seen.items() if not pid_gone(pid, start)}

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
        """Signal the process group (SIGTERM by default) and wait at most `timeout` s for it and every
        descendant seen to exit; SIGKILL what is left. Bounded: returns within about timeout + 10 s."""
        if self.running():
            self.tree()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, sig)
        else:
            self.tree()  # orphans of an exited leader may still be in its group
        deadline = time.monotonic() + timeout
        while (self.running() or self.remaining()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.running() or self.remaining():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)
            for pid in self.remaining():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        deadline = time.monotonic() + 10
        while self.remaining() and time.monotonic() < deadline:
            time.sleep(0.1)
        self._log_file.close()

    def kill(self) -> None:
        """SIGKILL the whole tree at once, as when a machine dies."""
        for pid in self.tree():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.stop(timeout=5.0, sig=signal.SIGKILL)


class S3Server:
    """moto's S3 server on `host` and a free port, with the bucket `gptrecipe`."""

    def __init__(self, root: Path, host: str = "127.0.0.1"):
        self.root, self.host = root, host
        self.port = free_ports(1, host)[0]
        self.endpoint = f"http://{host}:{self.port}"
        self.process: Process | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a client needs: endpoint (botocore, s3fs, pyarrow and MLflow's S3 client), fake keys."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254 for credentials or region
        }

    def start(self, timeout: float = 60.0) -> S3Server:
        argv = [str(BIN / "moto_server"), "-H", self.host, "-p", str(self.port)]
        self.process = Process("moto", argv, env={**os.environ, **self.env}, log=self.root / "moto.log")
        wait_until(lambda: http_status(self.endpoint) < 500, timeout, "moto answers", [self.process])
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET)
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop(timeout=10)


class MlflowServer:
    """`mlflow server` on SQLite, artifacts proxied to s3://gptrecipe/mlflow, bound to `host`."""

    def __init__(
        self, root: Path, s3_env: dict[str, str], host: str = "127.0.0.2", allowed_hosts: bool = True
    ):
        self.root, self.s3_env, self.host, self.allowed_hosts = root, s3_env, host, allowed_hosts
        self.port = free_ports(1, host)[0]
        self.tracking_uri = f"http://{host}:{self.port}"
        self.process: Process | None = None

    def launch(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}"]
        argv += ["--artifacts-destination", f"s3://{BUCKET}/mlflow", "--workers", "1"]
        argv += ["--host", self.host, "--port", str(self.port)]
        if self.allowed_hosts:
            # The Host header clients send (with the port: matched exactly); without the flag MLflow 3
            # allows only localhost, 127.0.0.1 and the private ranges, and answers 403 to 127.0.0.2.
            argv += ["--allowed-hosts", f"{self.host}:{self.port}"]
        env = {
            **os.environ,
            **self.s3_env,
            # The server's job runner (GenAI jobs) is six huey consumers and a tmpdir in /dev/shm we
            # do not need.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        self.process = Process("mlflow", argv, env=env, log=self.root / "mlflow.log", cwd=self.root)

    def wait(self, timeout: float = 120.0) -> None:
        assert self.process is not None
        # /health is exempt from the Host check; an API call proves --allowed-hosts lets clients in.
        url = f"{self.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
        wait_until(lambda: http_status(url) == 200, timeout, "MLflow answers", [self.process])

    def start(self, timeout: float = 120.0) -> MlflowServer:
        self.launch()
        self.wait(timeout)
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop(timeout=15)


class RayNode:
    """One `ray start --block` node: its process, its directories and its ports."""

    def __init__(self, name: str, root: Path, ip: str):
        self.name, self.root, self.ip = name, root, ip
        self.temp_dir = root / "ray"  # short: Ray's socket paths live under it (108-byte limit)
        self.tmpdir = root / "tmp"
        self.scratch = root / "scratch"
        for d in (self.temp_dir, self.tmpdir, self.scratch):
            d.mkdir(parents=True, exist_ok=True)
        self.process: Process | None = None

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "TMPDIR": str(self.tmpdir), "GPTRECIPE_SCRATCH": str(self.scratch)}

    def started(self) -> bool:
        """`ray start` has finished starting the node (it is registered a while before that, and a
        SIGTERM before then is not acted on until its start-up GCS calls return)."""
        return self.process is not None and "Ray runtime started" in self.process.log_tail(100_000)

    def start(self, argv: list[str], env: dict[str, str]) -> None:
        ports = free_ports(len(RAY_NODE_PORT_FLAGS))
        argv = [*argv, f"--node-name={self.name}", f"--node-ip-address={self.ip}"]
        argv += [f"--temp-dir={self.temp_dir}", "--min-worker-port=0", "--max-worker-port=0"]
        argv += [f"--{flag}={port}" for flag, port in zip(RAY_NODE_PORT_FLAGS, ports, strict=True)]
        self.process = Process(f"ray {self.name}", argv, env=self.env(env), log=self.root / "ray-start.log")


class RayCluster:
    """A Ray head (token auth, dashboard and job API on 127.0.0.1) and `workers` worker nodes, each node
    its own `ray start --block` process group with its own loopback address, temp dir and scratch."""

    def __init__(
        self,
        root: Path,
        env: dict[str, str] | None = None,
        *,
        workers: int = 2,
        worker_cpus: int = 2,
        head_cpus: int = 0,
        object_store_mb: int = 256,
    ):
        self.root = root
        self.token = secrets.token_hex(16)
        self.gcs_port, self.dashboard_port, self.client_port = free_ports(3)
        self.job_address = f"http://127.0.0.1:{self.dashboard_port}"
        self.head = RayNode("head", root / "head", "127.0.0.10")
        self.workers = [RayNode(f"w{i}", root / f"w{i}", f"127.0.0.{11 + i}") for i in range(workers)]
        self.gcs_address = f"{self.head.ip}:{self.gcs_port}"
        self.worker_cpus, self.head_cpus, self.object_store_mb = worker_cpus, head_cpus, object_store_mb
        self.base_env = {
            **{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")},
            **(env or {}),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
            "HF_HUB_OFFLINE": "1",
            # `ray start --block` drains its node for up to 30 s on SIGTERM (for Serve's proxies); a
            # test cluster stops at once.
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            # A job's `python` must be this environment's, as it would be the image's on a real cluster.
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    @property
    def nodes_all(self) -> list[RayNode]:
        return [self.head, *self.workers]

    def launch_head(self) -> None:
        argv = [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--num-cpus={self.head_cpus}",
            "--num-gpus=0",
        ]
        argv += [f"--port={self.gcs_port}", f"--ray-client-server-port={self.client_port}"]
        argv += [
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
        ]
        argv += [f"--object-store-memory={128 * 2**20}"]
        self.head.start(argv, self.base_env)

    def launch_workers(self) -> None:
        for node in self.workers:
            argv = [str(BIN / "ray"), "start", f"--address={self.gcs_address}", "--block"]
            argv += [f"--num-cpus={self.worker_cpus}", "--num-gpus=0"]
            argv += [f"--object-store-memory={self.object_store_mb * 2**20}"]
            node.start(argv, self.base_env)

    def _processes(self) -> list[Process]:
        return [n.process for n in self.nodes_all if n.process is not None]

    def wait(self, timeout: float = 180.0) -> None:
        procs = self._processes()

        def all_alive() -> bool:
            if not all(n.started() for n in self.nodes_all):
                return False
            alive = {n["node_name"] for n in self.nodes() if n["alive"]}
            return alive >= {n.name for n in self.nodes_all}

        wait_until(all_alive, timeout, f"{len(self.nodes_all)} Ray nodes alive", procs)

    def start(self, timeout: float = 180.0) -> RayCluster:
        self.launch_head()
        self.wait_gcs(timeout)
        self.launch_workers()
        self.wait(timeout)
        return self

    def wait_gcs(self, timeout: float = 120.0) -> None:
        def listening() -> bool:
            with socket.create_connection((self.head.ip, self.gcs_port), timeout=1):
                return True

        assert self.head.process is not None
        wait_until(listening, timeout, "the Ray head's GCS listens", [self.head.process])

    def api(self, path: str, timeout: float = 10.0) -> Any:
        """GET the dashboard's REST API with the token."""
        request = urllib.request.Request(
            f"{self.job_address}{path}", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return json.load(r)

    def nodes(self) -> list[dict[str, Any]]:
        """Every node the cluster knows, dead ones too: node_id, node_name, ip, alive, is_head, cpus."""
        result = self.api("/api/v0/nodes?limit=100&detail=true")["data"]["result"]["result"]
        return [
            {
                "node_id": n["node_id"],
                "node_name": n.get("node_name"),
                "ip": n.get("node_ip"),
                "alive": n["state"] == "ALIVE",
                "is_head": n.get("is_head_node", False),
                "cpus": n.get("resources_total", {}).get("CPU", 0.0),
            }
            for n in result
        ]

    def worker_node(self, which: int | str) -> RayNode:
        """A worker by index, node name or Ray node id."""
        if isinstance(which, int):
            return self.workers[which]
        for node in self.workers:
            if which == node.name:
                return node
        for n in self.nodes():
            if n["node_id"] == which and n["alive"]:
                return self.worker_node(n["node_name"])
        raise KeyError(f"no live worker node {which!r}")

    def node_id(self, which: int | str) -> str:
        name = self.worker_node(which).name
        return next(n["node_id"] for n in self.nodes() if n["node_name"] == name and n["alive"])

    def kill_worker(self, which: int | str) -> None:
        """SIGKILL a worker node's processes at once, as when its machine dies."""
        node = self.worker_node(which)
        assert node.process is not None
        node.process.kill()

    def stop(self) -> None:
        # The workers together first (stopping the head first leaves them retrying the GCS), then the head.
        workers = [n.process for n in self.workers if n.process is not None]
        with ThreadPoolExecutor(max(1, len(workers))) as pool:
            list(pool.map(lambda p: p.stop(timeout=20), workers))
        if self.head.process is not None:
            self.head.process.stop(timeout=20)


class LocalCluster:
    """The three together; a context manager. `stop()` stops everything, in reverse order, even after a
    failed start, within bounded waits."""

    def __init__(
        self, root: Path | None = None, *, workers: int = 2, worker_cpus: int = 2, keep: bool = False
    ):
        # Short and under /tmp: Ray's socket paths have a length limit.
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="lc-", dir="/tmp")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.s3 = S3Server(self.root / "s3")
        self.mlflow = MlflowServer(self.root / "mlflow", self.s3.env)
        self.ray = RayCluster(self.root, self.s3.env, workers=workers, worker_cpus=worker_cpus)
        self.s3_env = self.s3.env
        self.tracking_uri = self.mlflow.tracking_uri
        self.job_address = self.ray.job_address
        self.token = self.ray.token
        self.store_url = f"s3://{BUCKET}/store"
        self.scratch_dirs = [n.scratch for n in self.ray.workers]
        self.startup_s: float | None = None

    def start(self, timeout: float = 240.0) -> LocalCluster:
        t0 = time.monotonic()
        try:
            self.s3.start()
            # MLflow and the Ray head come up side by side; the workers join once the GCS listens.
            self.mlflow.launch()
            self.ray.launch_head()
            self.ray.wait_gcs(timeout)
            self.ray.launch_workers()
            self.mlflow.wait(timeout)
            self.ray.wait(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def processes(self) -> list[Process]:
        procs = [self.s3.process, self.mlflow.process, *(n.process for n in self.ray.nodes_all)]
        return [p for p in procs if p is not None]

    def pids(self) -> dict[int, int]:
        """pid -> start time of every process of the cluster now running (and of those seen before)."""
        found: dict[int, int] = {}
        for proc in self.processes():
            proc.tree()
            found.update(proc.seen)
        return found

    def nodes(self) -> list[dict[str, Any]]:
        return self.ray.nodes()

    def kill_worker(self, which: int | str) -> None:
        self.ray.kill_worker(which)

    def client_env(self) -> dict[str, str]:
        """The environment a client (a test, `ray job submit`, a user's shell) needs."""
        return {
            **self.s3_env,
            "RAY_AUTH_MODE": "token",  # the `ray` CLI sends the token only in token mode
            "RAY_AUTH_TOKEN": self.token,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
        }

    def shell_env(self) -> dict[str, str]:
        """This process's environment as a client's shell would have it: `client_env`, our venv's
        commands first on PATH, and no Ray address or token file of another cluster."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        return {**env, **self.client_env(), "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}

    def stop(self) -> None:
        errors = []
        for part in (self.ray, self.mlflow, self.s3):
            try:
                part.stop()
            except Exception as e:  # stop the rest regardless
                errors.append(e)
        if self._own_root and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise errors[0]

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    # Start it by hand, print what a shell needs, stop (and remove its directory) on Ctrl-C.
    with LocalCluster() as cluster:
        print(f"# started in {cluster.startup_s:.1f} s; logs under {cluster.root}")
        for key, value in cluster.client_env().items():
            print(f"export {key}={value}", flush=True)
        print(
            f"# ray job submit --address {cluster.job_address} --working-dir . -- gptrecipe run smoke "
            f"pipeline.store={cluster.store_url} pipeline.tracking_uri={cluster.tracking_uri}",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
