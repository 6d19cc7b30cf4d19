"""W6 batch: JSON Lines requests of the seed formula, with varying values, through `gradcalc batch`.

Requests per second over the whole process (start-up included), with
`--jobs 1` and `--jobs 2`; peak RSS is the largest sum over the process and
its workers (sampled from /proc), compared between a short and a long input
to show whether memory grows with the input.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from benchmarks.harness import Config, Report, attempt, run_process

FORMULA = "3*a**3 - b**2"


def write_requests(path: Path, count: int) -> Path:
    """count requests whose values cycle, so each answer can be checked from its id."""
    with path.open("w") as out:
        for index in range(count):
            a, b = _values(index)
            out.write(
                json.dumps({"id": index, "formula": FORMULA, "vars": {"a": a, "b": b}}) + "\n"
            )
    return path


def _values(index: int) -> tuple[float, float]:
    return (index % 1000) / 100, ((index * 7) % 1000) / 100


def check_answers(stdout: str, count: int) -> None:
    lines = stdout.splitlines()
    if len(lines) != count:
        raise AssertionError(f"{count} requests gave {len(lines)} lines")
    for line in (lines[0], lines[count // 2], lines[-1]):
        answer = json.loads(line)
        a, b = _values(answer["id"])
        want = {"a": 9 * a * a, "b": -2 * b}
        got = answer["gradients"]
        if any(abs(got[name] - want[name]) > 1e-9 * max(1.0, abs(want[name])) for name in want):
            raise AssertionError(f"request {answer['id']} answered {line}")


def run(config: Config, report: Report) -> None:
    long_count = config.size(full=100_000, quick=5_000)
    short_count = max(1, long_count // 5)
    long_file = write_requests(config.workdir / "batch-long.jsonl", long_count)
    short_file = write_requests(config.workdir / "batch-short.jsonl", short_count)
    script = str(config.gradcalc_script)
    if config.install_note:
        report.note("W6", config.install_note)
    rates = {}
    memory: dict[int, tuple[float, float]] = {}
    for jobs in (1, 2):

        def measure(jobs: int = jobs) -> None:
            def batch(path: Path, count: int):
                child = run_process(
                    [script, "batch", str(path), "--jobs", str(jobs)], watch_memory=True
                )
                if child.returncode != 0:
                    raise RuntimeError(
                        f"exit {child.returncode}: {child.stdout[:300]} {child.stderr[-1000:]}"
                    )
                check_answers(child.stdout, count)
                return child

            short = batch(short_file, short_count)
            first = batch(long_file, long_count)
            runs = [first]
            if first.seconds < 40:
                runs += [batch(long_file, long_count) for _ in range(config.runs(full=2, quick=0))]
            rates[jobs] = report.measure(
                "W6",
                f"--jobs {jobs}, {long_count} requests",
                [long_count / r.seconds for r in runs],
                "req/s",
            )
            long_rss = statistics.median(r.peak_rss_mib for r in runs)
            report.measure(
                "W6",
                f"--jobs {jobs} peak RSS (all processes), {short_count} requests",
                [short.peak_rss_mib],
                "MiB",
            )
            report.measure(
                "W6",
                f"--jobs {jobs} peak RSS (all processes), {long_count} requests",
                [long_rss],
                "MiB",
            )
            memory[jobs] = (long_rss, short.peak_rss_mib)

        attempt(report, "W6", f"--jobs {jobs}", measure)
    for jobs in (1, 2):
        long_rss, short_rss = memory.get(jobs, (None, None))
        report.target(
            "W6",
            f"--jobs {jobs} peak RSS {long_count} / {short_count} requests",
            long_rss,
            short_rss,
            1.1,
            note="flat memory",
        )
    report.target(
        "W6",
        "--jobs 1 requests/s (absolute)",
        rates.get(1),
        1.0,
        3000,
        lower_is_better=False,
        note="absolute: requests per second",
    )
    report.target(
        "W6",
        "--jobs 2 / --jobs 1 requests/s",
        rates.get(2),
        rates.get(1),
        1.6,
        lower_is_better=False,
    )
