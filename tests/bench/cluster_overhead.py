"""What the cluster path costs: the smoke pipeline through `ray job submit` on the one-machine cluster
(tests/cluster/local_cluster.py: S3 store, MLflow server, a head and two worker nodes) against the same
config run in-process (embedded Ray, local store, SQLite tracking), back to back on this machine.

    .venv/bin/python tests/bench/cluster_overhead.py [--repeats 1] [key=value ...]

Both runs start cold (a fresh store, nothing cached); the cluster's own start-up is reported apart and
not counted. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.cluster.local_cluster import LocalCluster  # noqa: E402

BIN = Path(sys.executable).parent


def timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each, alternating")
    parser.add_argument("overrides", nargs="*", help="config overrides for both runs")
    args = parser.parse_args()

    cluster_s, local_s = [], []
    with LocalCluster() as cluster:
        print(f"cluster started in {cluster.startup_s:.1f} s (not counted)", flush=True)
        env = cluster.shell_env()
        local_env = {k: v for k, v in env.items() if k not in cluster.client_env()}  # no cluster
        for i in range(args.repeats):
            where = [
                f"pipeline.store={cluster.store_url}/bench-{i}",
                f"pipeline.tracking_uri={cluster.tracking_uri}",
            ]
            command = [
                str(BIN / "ray"),
                "job",
                "submit",
                "--address",
                cluster.job_address,
                "--working-dir",
                ".",
            ]
            command += ["--", "gptrecipe", "run", "smoke", *where, *args.overrides]
            cluster_s.append(timed(command, env, ROOT))
            print(f"cluster, ray job submit: {cluster_s[-1]:.1f} s", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                where = [f"pipeline.store={tmp}/store", f"pipeline.tracking_uri=sqlite:///{tmp}/mlflow.db"]
                command = [str(BIN / "gptrecipe"), "run", "smoke", *where, *args.overrides]
                local_s.append(timed(command, local_env, Path(tmp)))
            print(f"in-process, gptrecipe run: {local_s[-1]:.1f} s", flush=True)
    c, l_ = statistics.median(cluster_s), statistics.median(local_s)
    print(
        f"smoke pipeline, median of {args.repeats}: cluster {c:.1f} s, in-process {l_:.1f} s: {c / l_:.2f}x"
    )


if __name__ == "__main__":
    main()
