"""bench/cpu_guard.py's verdict (issue 14's CPU regression guard) on recorded and measured numbers.

The guard fails on the ratio dbguardian / pipeline, measured in the same run; the absolute CPU-s/GB
only warns, so a slower or faster machine does not trip it. The measurements themselves run in
tests/e2e/test_cpu_guard.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))  # the bench scripts are top-level modules, not a package

from cpu_guard import (  # noqa: E402
    DEFAULT_RANDOM_MB,
    DEFAULT_SCALE,
    MARGIN,
    MIN_RECORD_RUNS,
    Numbers,
    judge,
    record_numbers,
)

# Numbers like the recorded ones (CPU-s per GB of raw dump).
RECORDED = Numbers.from_medians(dbguardian=10.7, pipeline=8.3)


def test_the_same_numbers_pass() -> None:
    verdict = judge(RECORDED, RECORDED)
    assert verdict.passed
    assert verdict.lines[-1] == "PASS"


def test_dbguardian_growing_more_than_the_margin_against_the_pipeline_fails() -> None:
    slower = Numbers.from_medians(dbguardian=RECORDED.dbguardian * 1.21, pipeline=RECORDED.pipeline)
    verdict = judge(RECORDED, slower)
    assert not verdict.passed
    assert "REGRESSION" in verdict.lines[0] and "+21.0%" in verdict.lines[0]
    assert verdict.lines[-1].startswith("FAIL")


def test_growth_within_the_margin_passes() -> None:
    assert judge(RECORDED, Numbers.from_medians(RECORDED.dbguardian * 1.19, RECORDED.pipeline)).passed
    assert not judge(RECORDED, Numbers.from_medians(RECORDED.dbguardian * 1.19, RECORDED.pipeline), margin=0.1).passed


def test_a_pipeline_that_got_cheaper_makes_the_same_dbguardian_fail() -> None:
    """The ratio is what counts: dbguardian standing still while the reference got 25 % cheaper is a regression."""
    assert not judge(RECORDED, Numbers.from_medians(RECORDED.dbguardian, RECORDED.pipeline * 0.75)).passed


def test_a_slower_machine_only_warns() -> None:
    """Both variants 40 % more CPU per GB (another CPU model, frequency, contention): the ratio held."""
    machine = Numbers.from_medians(RECORDED.dbguardian * 1.4, RECORDED.pipeline * 1.4)
    verdict = judge(RECORDED, machine)
    assert verdict.passed
    assert any(line.startswith("warning: dbguardian's absolute CPU-s/GB grew") for line in verdict.lines)


def test_an_improvement_passes_and_suggests_re_recording() -> None:
    faster = Numbers.from_medians(RECORDED.dbguardian * 0.7, RECORDED.pipeline)
    verdict = judge(RECORDED, faster)
    assert verdict.passed
    assert any("re-record" in line for line in verdict.lines)


def test_a_hand_lowered_ratio_in_the_record_is_what_gets_compared() -> None:
    record = json.loads((REPO / "bench" / "cpu_guard.json").read_text())
    measured = record_numbers(record)
    record["ratio"] = measured.ratio / 1.3
    assert not judge(record_numbers(record), measured).passed


def test_the_committed_record_is_consistent() -> None:
    """bench/cpu_guard.json: the guard's default data, enough rounds, ratio = the medians' quotient."""
    record = json.loads((REPO / "bench" / "cpu_guard.json").read_text())
    numbers = record_numbers(record)
    assert record["data"]["scale"] == DEFAULT_SCALE and record["data"]["random_mb"] == DEFAULT_RANDOM_MB
    assert record["runs"] >= MIN_RECORD_RUNS
    assert abs(numbers.ratio - numbers.dbguardian / numbers.pipeline) < 1e-3
    assert judge(numbers, numbers, MARGIN).passed
