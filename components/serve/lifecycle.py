"""Long-running commands (`serve`, `chat`, `ui`) stop everything they started on SIGINT or SIGTERM.

Python turns SIGINT into KeyboardInterrupt, so `finally:` blocks run; SIGTERM (what `kill`, systemd,
Kubernetes and CI send) would end the process on the spot and orphan its children. `interrupt_on_signals`
makes SIGTERM behave like SIGINT for the duration of a block.

A child that has children of its own (`mlflow server` starts a web server and job workers) is started
in its own process group, so that stopping it means signalling the whole group: killing only the
direct child would leave its workers running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt like SIGINT does; the old handlers come back."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM to the process group led by `proc`, then SIGKILL to whatever is left after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # the group is gone
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; its workers may still be shutting down: wait for the group to empty.
        if _wait_group_empty(proc.pid, timeout):
            return


def _wait_group_empty(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def run_group(cmd: Sequence[str]) -> int:
    """Run `cmd` in its own process group until it exits or this process gets SIGINT/SIGTERM, which stop
    the whole group. Returns the command's exit status (0 when interrupted)."""
    # start_new_session: a new session and process group, so a terminal's Ctrl-C does not also reach
    # the children directly; we stop them ourselves, all of them, in order.
    proc = subprocess.Popen(list(cmd), start_new_session=True)
    try:
        with interrupt_on_signals():
            return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_group(proc)
