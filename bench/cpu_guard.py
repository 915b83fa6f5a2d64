#!/usr/bin/env python3
"""CPU regression guard: dbguardian's CPU-seconds per GB against the plain pg_dump | zstd pipeline.

Creates a small throwaway PostgreSQL cluster (backup_bench.py's ``setup_cluster``: pgbench data plus
random hex text, ~300 MB of raw ``pg_dump -Fc -Z0`` output, so both row-heavy and compression-heavy
work are in it), then runs, interleaved (every variant once per round, the order alternating):

  dbguardian   dbguardian --log-level warning backup bench   (local storage, zstd level 3, threads 0)
  pipeline     pg_dump -Fc -Z0 bench | zstd -q -3 -T<CPUs> > file   (bash -o pipefail)

and measures, per run, CPU time, not wall time: user+sys of the command's whole process tree (GNU time
%U %S: the process, its threads and every reaped child, pg_dump included) plus the cluster's CPU during
the run (the backends serving pg_dump and dbguardian's own queries: backup_bench's srv_cpu_s), divided
by the raw dump size in GB (10^9 bytes). CPU time of a process barely depends on what else runs on the
machine, so a shared CI box does not make this flaky the way wall time would.

What is guarded is the RATIO of the medians, dbguardian / pipeline, both measured in the same
invocation: a slower or faster CPU model, another frequency or a busy host moves both variants alike
and cancels out, while a change that makes dbguardian itself spend more CPU does not. The absolute
CPU-s/GB is printed next to the recorded one and only warns when it grew by more than the margin while
the ratio did not (the machine changed, not dbguardian).

  .venv/bin/python bench/cpu_guard.py             # compare with bench/cpu_guard.json: exit 1 when the
                                                  #   ratio grew by more than 20 %
  .venv/bin/python bench/cpu_guard.py --record --runs 5   # re-record after an intended change

Exit codes: 0 pass, 1 regression, 2 cannot compare (other data parameters than recorded, bad file).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backup_bench import (
    DB,
    DEFAULT_PGBIN,
    REPO,
    Cluster,
    Sample,
    Variant,
    check_dbguardian,
    check_tools,
    check_zstd,
    db_size_pretty,
    git_describe,
    log,
    plan_cluster,
    raw_dump_bytes,
    ready_cluster,
    run_variant,
    tool_version,
    write_policy,
)

DBGUARDIAN = "dbguardian"
PIPELINE = "pipeline"
GB = 1_000_000_000
MARGIN = 0.20  # from issue 14: fail when dbguardian's CPU per GB grows by more than 20 %
MIN_RECORD_RUNS = 5
DEFAULT_SCALE = 15
DEFAULT_RANDOM_MB = 128
DEFAULT_BASELINE = REPO / "bench" / "cpu_guard.json"
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "dbg-cpu-guard"


# --------------------------------------------------------------------------------------- the verdict


@dataclass(frozen=True)
class Numbers:
    """Medians in CPU-seconds per GB of raw dump, and the guarded ratio dbguardian / pipeline."""

    dbguardian: float
    pipeline: float
    ratio: float

    @classmethod
    def from_medians(cls, dbguardian: float, pipeline: float) -> Numbers:
        return cls(dbguardian, pipeline, dbguardian / pipeline)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    lines: tuple[str, ...]


def growth(measured: float, recorded: float) -> float:
    return measured / recorded - 1


def judge(recorded: Numbers, measured: Numbers, margin: float = MARGIN) -> Verdict:
    """Fail when the ratio grew by more than ``margin``; the absolute numbers only warn."""
    ratio_growth = growth(measured.ratio, recorded.ratio)
    passed = ratio_growth <= margin
    lines = [
        f"ratio dbguardian/pipeline: {measured.ratio:.3f}, recorded {recorded.ratio:.3f} "
        f"({ratio_growth:+.1%}, limit +{margin:.0%}): {'ok' if passed else 'REGRESSION'}"
    ]
    for name, now, then in (
        ("dbguardian", measured.dbguardian, recorded.dbguardian),
        ("pipeline", measured.pipeline, recorded.pipeline),
    ):
        lines.append(f"{name} CPU-s/GB: {now:.2f}, recorded {then:.2f} ({growth(now, then):+.1%})")
    if passed and growth(measured.dbguardian, recorded.dbguardian) > margin:
        lines.append(
            f"warning: dbguardian's absolute CPU-s/GB grew by more than {margin:.0%} but the ratio did not: "
            "the pipeline slowed down alike, so the machine (CPU model, frequency, contention) changed, not dbguardian"
        )
    if ratio_growth < -margin:
        lines.append(
            f"note: the ratio fell by {-ratio_growth:.0%}: if that is an intended improvement, re-record "
            "(--record) so that the guard keeps its margin from the new level"
        )
    lines.append("PASS" if passed else f"FAIL: dbguardian's CPU per GB grew by more than {margin:.0%} against the pipeline")
    return Verdict(passed, tuple(lines))


# ------------------------------------------------------------------------------------ the recording


def load_record(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def record_numbers(record: dict[str, Any]) -> Numbers:
    """The medians of a record (the ratio as written, so a hand-edited ratio is what gets compared)."""
    medians = record["medians_cpu_s_per_gb"]
    return Numbers(float(medians["dbguardian"]), float(medians["pipeline"]), float(record["ratio"]))


def cpu_per_gb(sample: Sample, raw_bytes: int) -> float:
    return (sample.cpu_seconds + sample.server_cpu_seconds) / (raw_bytes / GB)


def machine_note() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{os.cpu_count()} CPUs ({model}), {mem_gib:.0f} GiB RAM, {platform.machine()}"


def build_record(args: argparse.Namespace, cluster: Cluster, raw_bytes: int, samples: Sequence[Sample]) -> dict[str, Any]:
    per_run = {
        name: [round(cpu_per_gb(s, raw_bytes), 3) for s in samples if s.variant == name] for name in (DBGUARDIAN, PIPELINE)
    }
    numbers = Numbers.from_medians(statistics.median(per_run[DBGUARDIAN]), statistics.median(per_run[PIPELINE]))
    python = args.dbguardian.parent / "python"  # the venv dbguardian runs in (a wrapper may live elsewhere)
    zstandard = tool_version(
        [str(python if python.exists() else sys.executable), "-c", "import zstandard; print(zstandard.__version__)"],
        r"(\S+)",
    )
    postgres = tool_version([cluster.tool("postgres"), "--version"], r"(\d+\.\d+)")
    zstd = tool_version(["zstd", "-V"], r"(v[0-9.]+)")
    return {
        "metric": "CPU seconds per GB (10^9 bytes) of raw pg_dump -Fc -Z0 output: user+sys of the command's process "
        "tree plus the cluster's CPU during the run; medians over the runs; guarded: ratio = dbguardian / pipeline",
        "ratio": round(numbers.ratio, 4),
        "medians_cpu_s_per_gb": {DBGUARDIAN: round(numbers.dbguardian, 3), PIPELINE: round(numbers.pipeline, 3)},
        "per_run_cpu_s_per_gb": per_run,
        "per_run_other_cpu_s": {
            name: [round(s.other_cpu_seconds, 2) for s in samples if s.variant == name] for name in (DBGUARDIAN, PIPELINE)
        },
        "runs": args.runs,
        "data": {"scale": args.scale, "random_mb": args.random_mb, "raw_dump_bytes": raw_bytes},
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_describe(),
        "machine": f"{machine_note()}; PostgreSQL {postgres}, zstd {zstd}, python-zstandard {zstandard}",
    }


# ------------------------------------------------------------------------------------- measurement


def build_variants(args: argparse.Namespace, cluster: Cluster, jobs: int) -> list[Variant]:
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    policy = args.workdir / "policy.yaml"
    storage = write_policy(policy, args.workdir / DBGUARDIAN, cluster, "socket", threads=0)
    out = args.workdir / "out"
    out.mkdir(exist_ok=True)
    zst = out / "dump.fc.zst"
    pg_dump = shlex.quote(cluster.tool("pg_dump"))
    return [
        Variant(
            name=DBGUARDIAN,
            argv=[str(args.dbguardian), "--policy", str(policy), "--log-level", "warning", "backup", "bench"],
            env=clean_env,
            output=storage,
            check=check_dbguardian,
        ),
        Variant(
            name=PIPELINE,
            argv=["bash", "-o", "pipefail", "-c", f"{pg_dump} -Fc -Z0 {DB} | zstd -q -3 -T{jobs} > {shlex.quote(str(zst))}"],
            env=cluster.env("socket"),
            output=zst,
            check=check_zstd,
        ),
    ]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    check_tools(args)
    cluster = Cluster(args.workdir, args.pgbin)
    reuse = plan_cluster(args, cluster)
    try:
        ready_cluster(args, cluster, reuse)
        jobs = os.cpu_count() or 1
        variants = build_variants(args, cluster, jobs)
        raw_bytes = raw_dump_bytes(cluster, "socket")
        log(f"db {db_size_pretty(cluster)}, raw dump {raw_bytes / 1e6:.0f} MB; {args.runs} round(s)")
        samples: list[Sample] = []
        for run_no in range(1, args.runs + 1):
            # Alternate the order so that neither variant always runs right after the other.
            for variant in variants if run_no % 2 else variants[::-1]:
                samples.append(run_variant(variant, run_no, args.workdir, cluster, args.wait_idle))
        record = build_record(args, cluster, raw_bytes, samples)
    finally:
        if args.keep:
            log(f"--keep: cluster left in {args.workdir}")
        else:
            cluster.remove()
    print(measurement_table(samples, raw_bytes, record["ratio"]))
    return record


def measurement_table(samples: Sequence[Sample], raw_bytes: int, ratio: float) -> str:
    lines = [
        f"# CPU-s/GB = (user+sys of the command's tree + the cluster's CPU) / {raw_bytes / GB:.3f} GB of raw dump",
        f"{'variant':<11} {'min':>7} {'median':>7} {'max':>7}   "
        f"{'cpu_s':>6} {'srv_cpu_s':>9} {'wall_s':>6} {'other_cpu_s':>11}",
    ]
    for name in (DBGUARDIAN, PIPELINE):
        rows = [s for s in samples if s.variant == name]
        per_gb = [cpu_per_gb(s, raw_bytes) for s in rows]
        lines.append(
            f"{name:<11} {min(per_gb):>7.2f} {statistics.median(per_gb):>7.2f} {max(per_gb):>7.2f}   "
            f"{statistics.median([s.cpu_seconds for s in rows]):>6.2f} "
            f"{statistics.median([s.server_cpu_seconds for s in rows]):>9.2f} "
            f"{statistics.median([s.seconds for s in rows]):>6.2f} "
            f"{statistics.median([s.other_cpu_seconds for s in rows]):>11.2f}"
        )
    rounds = sorted({s.run for s in samples})
    per_round = []
    for run_no in rounds:
        pair = {s.variant: cpu_per_gb(s, raw_bytes) for s in samples if s.run == run_no}
        per_round.append(f"{pair[DBGUARDIAN] / pair[PIPELINE]:.3f}")
    lines.append(f"ratio dbguardian/pipeline (medians): {ratio:.3f}   per round: {', '.join(per_round)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="rounds, every variant once per round (default 3)")
    parser.add_argument(
        "--record", action="store_true", help=f"write the medians to --baseline (needs >= {MIN_RECORD_RUNS} runs)"
    )
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="the recorded numbers (default %(default)s)")
    parser.add_argument("--margin", type=float, default=MARGIN, help="allowed growth of the ratio (default %(default)s)")
    parser.add_argument("--out", type=Path, help="also write this run's numbers (the record's format) to this file")
    parser.add_argument(
        "--measured", type=Path, help="do not measure: judge the numbers in this file (written by --out) against --baseline"
    )
    parser.add_argument("--scale", type=int, default=DEFAULT_SCALE, help="pgbench scale (default %(default)s)")
    parser.add_argument(
        "--random-mb", type=int, default=DEFAULT_RANDOM_MB, help="MB of random hex text (default %(default)s)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help="must not exist, or be this script's (default %(default)s)"
    )
    parser.add_argument("--pgbin", type=Path, default=DEFAULT_PGBIN, help="default %(default)s")
    parser.add_argument(
        "--dbguardian", type=Path, default=REPO / ".venv" / "bin" / "dbguardian", help="the dbguardian executable"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=10,
        metavar="SECONDS",
        help="before each run wait up to this long for the machine to be idle (default %(default)s; CPU time "
        "needs no quiet machine, but it is steadier on one)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept cluster with the same --scale/--random-mb")
    parser.add_argument("--cleanup", action="store_true", help="only stop and delete the cluster in --workdir")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir = args.workdir.resolve()
    if args.cleanup:
        Cluster(args.workdir, args.pgbin).remove()
        return 0
    if args.record and args.measured is None and args.runs < MIN_RECORD_RUNS:
        log(f"--record needs at least {MIN_RECORD_RUNS} runs: a baseline from fewer rounds makes the guard flaky")
        return 2
    record = load_record(args.measured) if args.measured is not None else measure(args)
    if args.out is not None:
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    if args.record:
        args.baseline.write_text(json.dumps(record, indent=2) + "\n")
        log(f"recorded in {args.baseline}: ratio {record['ratio']:.3f}, {record['medians_cpu_s_per_gb']}")
        return 0
    if not args.baseline.exists():
        log(f"no recorded numbers in {args.baseline}: record them with --record --runs {MIN_RECORD_RUNS}")
        return 2
    baseline = load_record(args.baseline)
    if {k: baseline["data"][k] for k in ("scale", "random_mb")} != {k: record["data"][k] for k in ("scale", "random_mb")}:
        log(f"cannot compare: recorded with data {baseline['data']}, measured with {record['data']}")
        return 2
    raw_drift = growth(record["data"]["raw_dump_bytes"], baseline["data"]["raw_dump_bytes"])
    if abs(raw_drift) > 0.05:
        log(f"warning: the raw dump differs from the recorded size by {raw_drift:+.1%} (another PostgreSQL version?)")
    print(f"# recorded {baseline['date']} at {baseline['commit']} on {baseline['machine']}")
    verdict = judge(record_numbers(baseline), record_numbers(record), args.margin)
    print("\n".join(verdict.lines))
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
