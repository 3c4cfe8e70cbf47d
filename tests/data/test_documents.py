"""The shared filter machinery's numbers: ratios of nothing are None, not a perfect score."""

from __future__ import annotations

from collections import Counter

from components.data.documents import FilterStats, precision_recall
from components.io.documents import per_second, ratio


def test_ratio_of_nothing_is_none():
    assert ratio(1, 4) == 0.25 and ratio(0, 4) == 0.0
    assert ratio(0, 0) is None and ratio(3, 0) is None


def test_per_second_needs_work_and_time():
    assert per_second(10, 2.0) == 5.0
    assert per_second(0, 2.0) is None  # nothing processed: no throughput, not 0/s
    assert per_second(10, 0.0) is None


def test_precision_recall_of_nothing():
    pr = precision_recall(set(), set())
    assert pr["precision"] is None and pr["recall"] is None and pr["predicted"] == pr["actual"] == 0
    pr = precision_recall({"a", "b"}, set())  # claims with nothing to find: real precision 0, no recall
    assert pr["precision"] == 0.0 and pr["recall"] is None
    pr = precision_recall(set(), {"a"})  # nothing claimed, something missed: no precision, recall 0
    assert pr["precision"] is None and pr["recall"] == 0.0
    pr = precision_recall({"a", "b"}, {"a", "c", "d", "e"})
    assert pr["precision"] == 0.5 and pr["recall"] == 0.25


def test_filter_stats_throughput():
    empty = FilterStats(cpu_seconds=0.5)
    assert empty.docs_per_cpu_second is None and empty.metrics()["docs_per_s_per_cpu"] is None
    stats = FilterStats(documents_in=30, documents_out=20, cpu_seconds=4.0, drops=Counter({"x.y": 10}))
    m = stats.metrics()
    assert m["docs_per_s_per_cpu"] == 7.5 and m["documents_dropped"] == 10 and m["dropped.x.y"] == 10
