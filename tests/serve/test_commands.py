"""The long-running commands as a user runs them: `gptrecipe chat` with piped stdin, and `gptrecipe ui` /
`gptrecipe serve` stopped by a real SIGTERM, after which no process they started may be left."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from serve_world import make_model_dir

GPTRECIPE = str(Path(sys.executable).parent / "gptrecipe")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited; only its entry is left


def wait_for_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the command exited with {proc.returncode}"
        try:
            if httpx2.get(url, timeout=1).status_code == 200:  # not a proxy's 404 while it starts
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the command and everything below it (found first: a killed parent's children move to init)."""
    for pid in [*descendants(proc.pid), proc.pid]:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def sigterm_and_check_all_gone(proc: subprocess.Popen, started: set[int]) -> None:
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        deadline = time.time() + 15
        while any(alive(p) for p in started) and time.time() < deadline:
            time.sleep(0.2)
        assert not [p for p in started if alive(p)], "processes left running after SIGTERM"
    finally:
        for pid in [proc.pid, *started]:  # never leave anything behind, even when the test fails
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_chat_in_process_with_piped_stdin(tmp_path):
    paths = make_model_dir(tmp_path)
    script = "What is 3 + 4?\n/system Answer briefly.\nAnd 5 + 6?\n/reset\nGrüße\n/quit\nnever read\n"
    out = subprocess.run(
        [GPTRECIPE, "chat", str(paths["model"]), "--temperature", "0", "--max-tokens", "6"],
        input=script, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    lines = out.splitlines()
    assert lines[0].startswith("chatting with tiny-chat")
    replies = [line for line in lines if line.startswith("tiny-chat> ")]
    assert len(replies) == 3 and "(system message set)" in lines and "(conversation reset)" in lines
    # Greedy decoding: after /reset the third reply must be exactly what a fresh chat with the same
    # system message answers, i.e. it saw neither of the earlier turns.
    fresh = subprocess.run(
        [GPTRECIPE, "chat", str(paths["model"]), "--temperature", "0", "--max-tokens", "6", "--system",
         "Answer briefly."],
        input="Grüße\n", capture_output=True, text=True, timeout=120, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert replies[2] == next(line for line in fresh if line.startswith("tiny-chat> "))


@pytest.mark.slow
def test_ui_stops_mlflow_and_its_workers_on_sigterm(tmp_path):
    port = free_port()
    proc = subprocess.Popen([GPTRECIPE, "ui", "--port", str(port)], cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", proc, timeout=90)
        started = descendants(proc.pid)
        assert len(started) >= 2  # mlflow server and at least one worker
    except BaseException:
        kill_tree(proc)  # it never got its SIGTERM: leave nothing it started running
        raise
    sigterm_and_check_all_gone(proc, started)


@pytest.mark.slow
def test_serve_starts_on_127_0_0_1_and_stops_everything_on_sigterm(tmp_path):
    paths = make_model_dir(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [GPTRECIPE, "serve", str(paths["model"]), "--port", str(port), "--num-cpus", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, env={**os.environ, "RAY_ADDRESS": ""},
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", proc, timeout=120)
        # Greedy: a sampled reply from the untrained model may end early on <|im_end|> (it did, in CI).
        messages = [{"role": "user", "content": "Hi"}]
        body = {"model": "tiny-chat", "messages": messages, "max_tokens": 4, "temperature": 0}
        reply = httpx2.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30).json()
        assert reply["usage"]["completion_tokens"] == 4 and reply["choices"][0]["finish_reason"] == "length"
        started = descendants(proc.pid)
        assert len(started) >= 3  # Ray's daemons, the Serve controller, proxy and replica
    except BaseException:
        kill_tree(proc)  # it never got its SIGTERM: leave nothing it started running
        raise
    sigterm_and_check_all_gone(proc, started)
