"""Loading users' post-training data: TRL formats, JSONL and Parquet, fsspec URLs, located errors."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.io.trl import DatasetError, load_preferences, load_prompts, load_sft


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


SFT = [
    {"messages": [user("What is 2 + 2?"), assistant("The answer is 4.")], "id": "a"},
    {"messages": [{"role": "system", "content": "Be brief."}, user("Hi"), assistant("Hello!")], "id": "b"},
    {"messages": [user("One"), assistant("1"), user("Two"), assistant("2")], "id": "c"},
]


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def write_parquet(path: Path, rows: list[dict]) -> str:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


# --- good files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_sft_loads_from_jsonl_and_parquet(tmp_path, fmt):
    path = (write_jsonl if fmt == "jsonl" else write_parquet)(tmp_path / f"sft.{fmt}", SFT)
    records = load_sft(path)
    assert [r["messages"] for r in records] == [r["messages"] for r in SFT]
    assert [r["id"] for r in records] == ["a", "b", "c"]  # other fields are kept


def test_preferences_accept_conversational_plain_and_implicit_prompt_forms(tmp_path):
    rows = [
        {
            "prompt": [user("Capital of Ejon?")],
            "chosen": [assistant("Thozusesh.")],
            "rejected": [assistant("Odend.")],
        },
        {"prompt": "Capital of Ejon?", "chosen": "Thozusesh.", "rejected": "Odend.", "rank_chosen": 0},
        {
            "chosen": [user("Hi"), assistant("Hello!"), user("Capital of Ejon?"), assistant("Thozusesh.")],
            "rejected": [user("Hi"), assistant("Hello!"), user("Capital of Ejon?"), assistant("Odend.")],
        },
    ]
    # A Parquet column has one type, so the conversational and plain forms go to separate files there.
    records = load_preferences(write_jsonl(tmp_path / "prefs.jsonl", rows))
    records += load_preferences(write_parquet(tmp_path / "conversational.parquet", rows[:1]))
    records += load_preferences(write_parquet(tmp_path / "plain.parquet", rows[1:2]))
    for r in [*records[:2], *records[3:]]:
        assert r["prompt"] == [user("Capital of Ejon?")]
        assert r["chosen"] == [assistant("Thozusesh.")] and r["rejected"] == [assistant("Odend.")]
    assert records[1]["rank_chosen"] == records[4]["rank_chosen"] == 0
    implicit = load_preferences(write_jsonl(tmp_path / "implicit.jsonl", rows[2:]))[0]
    assert implicit["prompt"] == [user("Hi"), assistant("Hello!"), user("Capital of Ejon?")]
    assert implicit["chosen"] == [assistant("Thozusesh.")] and implicit["rejected"] == [assistant("Odend.")]


def test_prompts_normalise_prompt_answer_and_task(tmp_path):
    rows = [
        {"prompt": "What is 2 + 2?", "answer": 4, "task": "arithmetic"},
        {"prompt": [{"role": "system", "content": "Be brief."}, user("Say hi.")]},
        {
            "prompt": [user("Capital of Ejon?")],
            "answer": "Thozusesh",
            "task": "fact",
            "competitors": ["Odend"],
        },
    ]
    records = load_prompts(write_jsonl(tmp_path / "prompts.jsonl", rows))
    assert records[0]["prompt"] == [user("What is 2 + 2?")] and records[0]["answer"] == "4"
    assert records[1]["answer"] is None and records[1]["task"] is None
    assert records[2]["competitors"] == ["Odend"] and records[2]["task"] == "fact"


def test_fsspec_urls_and_compressed_files(tmp_path):
    fs = fsspec.filesystem("memory")
    with fs.open("/user-data/sft.jsonl", "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in SFT))
    assert len(load_sft("memory://user-data/sft.jsonl")) == 3
    table = pa.Table.from_pylist([{"prompt": "Hi", "answer": "Hello"}])
    with fs.open("/user-data/prompts.parquet", "wb") as f:
        pq.write_table(table, f)
    assert load_prompts("memory://user-data/prompts.parquet")[0]["answer"] == "Hello"
    path = tmp_path / "sft.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in SFT).encode()))
    assert len(load_sft(str(path))) == 3


# --- bad files: every problem located -------------------------------------------------------------


def test_bad_jsonl_lines_are_reported_with_their_line_numbers(tmp_path):
    rows = [
        SFT[0],
        {"messages": [user("Hi"), {"role": "bot", "content": "Hello"}]},  # line 2
        "",  # blank lines are skipped but still counted
        "{not json",  # line 4
        SFT[1],
        "[1, 2]",  # line 6
        {"messages": [user("Hi"), assistant(42)]},  # line 7
        {"messages": [user("Hi")]},  # line 8
        {"text": "plain pretraining text"},  # line 9
    ]
    path = write_jsonl(tmp_path / "sft.jsonl", rows)
    with pytest.raises(DatasetError) as err:
        load_sft(path)
    assert err.value.problems == [
        f"{path}:2: messages[1].role 'bot' is not one of system/user/assistant",
        f"{path}:4: not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        f"{path}:6: expected a JSON object, got an array",
        f"{path}:7: messages[1].content must be a string, got int",
        f"{path}:8: messages has no assistant message, so there is nothing to learn",
        f"{path}:9: no 'messages' field (fields: text)",
    ]
    assert str(err.value).startswith(f"{path}: 6 malformed records:\n  {path}:2: messages[1].role 'bot'")


def test_bad_utf8_is_one_bad_line(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_bytes(json.dumps(SFT[0]).encode() + b"\n\xff\xfe{}\n" + json.dumps(SFT[1]).encode() + b"\n")
    with pytest.raises(DatasetError, match=re.escape(f"{path}:2: not valid UTF-8")):
        load_sft(str(path))


def test_bad_preference_and_prompt_records(tmp_path):
    prefs = [
        {"prompt": "Hi", "chosen": "Hello"},  # line 1
        {"prompt": [assistant("Hi")], "chosen": "a", "rejected": "b"},  # line 2
        {"prompt": "Hi", "chosen": [user("a")], "rejected": "b"},  # line 3
        {"chosen": [user("x"), assistant("a")], "rejected": [user("y"), assistant("b")]},  # line 4
    ]
    path = write_jsonl(tmp_path / "prefs.jsonl", prefs)
    with pytest.raises(DatasetError) as err:
        load_preferences(path)
    assert err.value.problems == [
        f"{path}:1: no 'rejected' field",
        f"{path}:2: prompt must end with a user message, but ends with 'assistant'",
        f"{path}:3: chosen[0].role 'user': a completion holds assistant messages only",
        f"{path}:4: no 'prompt' field, and chosen/rejected do not share an opening user turn",
    ]
    prompts = [{"prompt": "Hi", "answer": ["4"]}, {"prompt": "Hi", "task": ""}, {"answer": "4"}]
    path = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    with pytest.raises(DatasetError) as err:
        load_prompts(path)
    assert err.value.problems == [
        f"{path}:1: answer must be a string (or a number), got list",
        f"{path}:2: task must be a non-empty string naming a verifier, got ''",
        f"{path}:3: no 'prompt' field (fields: answer)",
    ]


def test_bad_parquet_rows_are_reported_with_their_row_index(tmp_path):
    rows = [{"messages": m["messages"]} for m in SFT] + [
        {"messages": [user("Hi"), {"role": "bot", "content": "x"}]}
    ]
    path = write_parquet(tmp_path / "sft.parquet", rows)
    with pytest.raises(DatasetError, match=re.escape(f"{path}:row 3: messages[1].role 'bot' is not one of")):
        load_sft(path)


def test_errors_are_capped_but_all_counted(tmp_path):
    rows = [{"messages": [user("Hi"), {"role": "bot", "content": "x"}]}] * 30
    path = write_jsonl(tmp_path / "sft.jsonl", rows)
    with pytest.raises(DatasetError) as err:
        load_sft(path, max_errors=5)
    assert [p.split(": ", 1)[0] for p in err.value.problems] == [f"{path}:{i}" for i in range(1, 6)]
    assert str(err.value).startswith(f"{path}: 30 malformed records:")
    assert str(err.value).endswith("... and 25 more")


def test_unusable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_sft(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DatasetError, match="unknown data format"):
        load_sft(write_jsonl(tmp_path / "sft.csv", SFT))
    with pytest.raises(DatasetError, match="no records"):
        load_sft(write_jsonl(tmp_path / "empty.jsonl", ["", ""]))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        load_sft(str(tmp_path / "broken.parquet"))
