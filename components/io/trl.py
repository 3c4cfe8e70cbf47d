"""Loaders for users' post-training data in TRL's formats, validated record by record.

- SFT: ``{"messages": [{"role", "content"}, ...]}`` with at least one assistant message.
- Preferences: ``{"prompt", "chosen", "rejected"}``. Conversational (``prompt`` a list of messages ending
  with a user message, ``chosen``/``rejected`` lists of assistant messages), plain strings (a string
  prompt becomes one user message, a string completion one assistant message), or TRL's implicit-prompt
  form (no ``prompt``; ``chosen`` and ``rejected`` are whole conversations and their common leading
  messages are the prompt). All are normalised to the conversational form.
- Prompts (RL): ``{"prompt"}`` (a string or messages ending with a user message) plus optional
  ``answer`` (a string; numbers are accepted and written as strings) and ``task`` (a verifier name).

Files are JSON Lines (``.jsonl``, ``.json``; compressed ``.gz``/``.zst``/... by suffix) or Parquet
(``.parquet``), on a local path or any fsspec URL (``s3://``, ``gs://``, ``memory://``). Other fields of
a record are kept as they are.

User data is never skipped silently: every malformed record is collected, and one `DatasetError` lists up
to `max_errors` of them as ``file:line: problem`` (JSONL, 1-based line) or ``file:row N: problem``
(Parquet, 0-based row), so a user fixes them all in one pass.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import fsspec

from components.io.chat import ChatFormatError, validate_messages

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".lz4")


class DatasetError(ValueError):
    """A data file that cannot be used; the message lists each bad record as `file:line: problem`."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


class RecordError(ValueError):
    """One malformed record (raised by a validator, collected by `_load`)."""


# --- reading files ---------------------------------------------------------------------------------


def data_format(path: str) -> str:
    """'jsonl' or 'parquet', from the file name (after a compression suffix)."""
    name = posixpath.basename(path.split("?", 1)[0]).lower()
    for suffix in _COMPRESSIONS:
        name = name.removesuffix(suffix)
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise DatasetError(
        f"{path}: unknown data format; name the file *.jsonl (JSON Lines, optionally compressed) or *.parquet"
    )


def read_records(path: str) -> Iterator[tuple[str, dict[str, Any] | RecordError]]:
    """(location, record) per record of a file; a record that cannot even be read comes as a RecordError.

    The location is `path:line` for JSON Lines (1-based; blank lines are skipped) and `path:row N` for
    Parquet (0-based), which is what error messages print.
    """
    fmt = data_format(path)
    try:
        fs, fs_path = fsspec.core.url_to_fs(path)
        if not fs.isfile(fs_path):
            raise FileNotFoundError(f"{path}: no such file")
    except FileNotFoundError:
        raise
    except Exception as e:  # a bad URL scheme or an unreachable store
        raise DatasetError(f"{path}: cannot open: {type(e).__name__}: {e}") from None
    if fmt == "jsonl":
        yield from _jsonl_records(path)
    else:
        yield from _parquet_records(path)


def _jsonl_records(path: str) -> Iterator[tuple[str, dict[str, Any] | RecordError]]:
    # Bytes, decoded per line, so one line of bad UTF-8 is one bad record rather than a failed file.
    with fsspec.open(path, "rb", compression="infer") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield where, RecordError(f"not valid UTF-8 ({e.reason} at byte {e.start})")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield where, RecordError(f"not valid JSON: {e.msg} (column {e.colno})")
                continue
            if not isinstance(record, dict):
                yield where, RecordError(f"expected a JSON object, got {_json_kind(record)}")
                continue
            yield where, record


def _parquet_records(path: str) -> Iterator[tuple[str, dict[str, Any] | RecordError]]:
    import pyarrow.parquet as pq

    with fsspec.open(path, "rb") as f:
        try:
            parquet = pq.ParquetFile(f)
        except Exception as e:  # pyarrow raises ArrowInvalid & co. for a corrupt footer
            raise DatasetError(f"{path}: not a readable Parquet file: {e}") from None
        row = 0
        for batch in parquet.iter_batches(batch_size=4096):
            for record in batch.to_pylist():
                yield f"{path}:row {row}", record
                row += 1


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


# --- validation ------------------------------------------------------------------------------------


def _messages(value: Any, field: str) -> list[dict[str, str]]:
    try:
        return validate_messages(value, where=field)
    except ChatFormatError as e:
        raise RecordError(str(e)) from None


def _as_prompt(value: Any, field: str = "prompt") -> list[dict[str, str]]:
    """A prompt string or message list, normalised to messages that end with a user message."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages = _messages(value, field)
    if messages[-1]["role"] != "user":
        raise RecordError(f"{field} must end with a user message, but ends with {messages[-1]['role']!r}")
    return messages


def _as_completion(value: Any, field: str) -> list[dict[str, str]]:
    """A completion string or a list of assistant messages."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    messages = _messages(value, field)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            raise RecordError(f"{field}[{i}].role {m['role']!r}: a completion holds assistant messages only")
    return messages


def sft_record(record: Mapping[str, Any]) -> dict[str, Any]:
    if "messages" not in record:
        raise RecordError(f"no 'messages' field (fields: {', '.join(sorted(record)) or 'none'})")
    messages = _messages(record["messages"], "messages")
    if not any(m["role"] == "assistant" for m in messages):
        raise RecordError("messages has no assistant message, so there is nothing to learn")
    return {**record, "messages": messages}


def preference_record(record: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in ("chosen", "rejected") if k not in record]
    if missing:
        raise RecordError(f"no {' or '.join(repr(k) for k in missing)} field")
    if "prompt" in record:
        prompt = _as_prompt(record["prompt"])
        chosen = _as_completion(record["chosen"], "chosen")
        rejected = _as_completion(record["rejected"], "rejected")
    else:  # implicit prompt: the two conversations share their opening
        full_chosen = _messages(record["chosen"], "chosen")
        full_rejected = _messages(record["rejected"], "rejected")
        # The prompt is the longest shared opening that ends with a user message.
        n = 0
        while n < min(len(full_chosen), len(full_rejected)) and full_chosen[n] == full_rejected[n]:
            n += 1
        while n > 0 and full_chosen[n - 1]["role"] != "user":
            n -= 1
        if n == 0:
            raise RecordError("no 'prompt' field, and chosen/rejected do not share an opening user turn")
        prompt = _as_prompt(full_chosen[:n], "chosen")
        chosen = _as_completion(full_chosen[n:], "chosen")
        rejected = _as_completion(full_rejected[n:], "rejected")
    return {**record, "prompt": prompt, "chosen": chosen, "rejected": rejected}


def prompt_record(record: Mapping[str, Any]) -> dict[str, Any]:
    if "prompt" not in record:
        raise RecordError(f"no 'prompt' field (fields: {', '.join(sorted(record)) or 'none'})")
    out = {**record, "prompt": _as_prompt(record["prompt"])}
    answer = record.get("answer")
    if isinstance(answer, bool) or not (answer is None or isinstance(answer, str | int | float)):
        raise RecordError(f"answer must be a string (or a number), got {type(answer).__name__}")
    out["answer"] = None if answer is None else str(answer)
    task = record.get("task")
    if task is not None and (not isinstance(task, str) or not task):
        raise RecordError(f"task must be a non-empty string naming a verifier, got {task!r}")
    out["task"] = task
    return out


# --- loaders ---------------------------------------------------------------------------------------


def _load(path: str, check: Callable[[Mapping[str, Any]], dict[str, Any]], max_errors: int) -> list[dict]:
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    bad = 0
    for where, record in read_records(str(path)):
        try:
            if isinstance(record, RecordError):
                raise record
            records.append(check(record))
        except RecordError as e:
            bad += 1
            if len(problems) < max_errors:
                problems.append(f"{where}: {e}")
    if bad:
        more = f"\n  ... and {bad - len(problems)} more" if bad > len(problems) else ""
        raise DatasetError(
            f"{path}: {bad} malformed record{'s' if bad > 1 else ''}:\n  " + "\n  ".join(problems) + more,
            problems,
        )
    if not records:
        raise DatasetError(f"{path}: no records")
    return records


def load_sft(path: str, *, max_errors: int = 20) -> list[dict[str, Any]]:
    """SFT conversations: records with `messages` validated and reduced to `{role, content}` dicts."""
    return _load(path, sft_record, max_errors)


def load_preferences(path: str, *, max_errors: int = 20) -> list[dict[str, Any]]:
    """Preference pairs normalised to conversational `prompt`, `chosen`, `rejected` message lists."""
    return _load(path, preference_record, max_errors)


def load_prompts(path: str, *, max_errors: int = 20) -> list[dict[str, Any]]:
    """RL prompts: `prompt` as messages, `answer` a string or None, `task` a string or None."""
    return _load(path, prompt_record, max_errors)


def write_jsonl(records: list[dict[str, Any]], f: Any) -> None:
    """JSON Lines into a binary file object, one record per line, non-ASCII kept readable."""
    for record in records:
        f.write((json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8"))


__all__ = [
    "DatasetError",
    "data_format",
    "load_preferences",
    "load_prompts",
    "load_sft",
    "preference_record",
    "prompt_record",
    "read_records",
    "sft_record",
    "write_jsonl",
]
