"""W6 batch: JSON Lines through `gradcalc batch`, a mixed batch against a hand-written worker.

The mixed batch (issue 12) cycles through five kinds of request
(`baselines.MIXED_FORMULAS`: a scalar polynomial, a scalar transcendental
formula, a softmax of a 5-vector, a 4x3 @ 3x2 matmul loss, a 4-step loop
program). Its reference is `baselines.mixed_batch_worker`, hand-written NumPy
forward and backward passes in a Python loop, which reads the same file and
writes the same lines; its output must equal gradcalc's (numbers within
1e-12 relative) before anything is timed, and every timed run must print
exactly what was checked. The whole processes (start-up included) of the
worker, `--jobs 1` and `--jobs 2` run round robin. Each kind is also timed
in-process (`gradcalc.api.run_line` against the worker's function), to say
which kind the time goes to.

Issue 6's figures stay: requests per second of the seed formula with varying
values over 100,000 requests, `--jobs 1` and `--jobs 2`; peak RSS is the
largest sum over the process and its workers (sampled from /proc), compared
between a short and a long input to show whether memory grows with the input.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks import baselines
from benchmarks.harness import REPO, Config, Report, attempt, external, interleaved, run_process

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
    run_seed_batch(config, report)
    run_mixed_batch(config, report)


def run_seed_batch(config: Config, report: Report) -> None:
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


MIXED_TOLERANCE = 1e-12
"""Relative to the larger of 1 and the reference's largest magnitude: gradcalc's float
backend computes exp/sin/tanh with the C library, within an ulp of NumPy's, and a gradient
that cancels terms of order 1 (d/da of exp(-a)*sin(b) + tanh(a*b) where it is ~4e-5)
keeps that ulp as an absolute error, ~1e-16."""


def _numbers_close(got: Any, want: Any) -> bool:
    """Equal structure and numbers within MIXED_TOLERANCE (of `want`'s magnitude, at least 1)."""
    import numpy as np

    try:
        got_array = np.asarray(got, dtype=np.float64)
        want_array = np.asarray(want, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    if got_array.shape != want_array.shape:
        return False
    scale = float(np.max(np.abs(want_array), initial=1.0))
    return bool(np.all(np.abs(got_array - want_array) <= MIXED_TOLERANCE * scale))


def compare_results(got_text: str, want_text: str, what: str) -> None:
    """Raise unless every line of got_text has want_text's keys (in order), equal non-numeric
    fields, and values and gradients within MIXED_TOLERANCE."""
    got_lines, want_lines = got_text.splitlines(), want_text.splitlines()
    if len(got_lines) != len(want_lines):
        raise AssertionError(f"{what}: {len(got_lines)} lines, the reference {len(want_lines)}")
    for got_line, want_line in zip(got_lines, want_lines, strict=True):
        got, want = json.loads(got_line), json.loads(want_line)
        wrong = list(got) != list(want) or any(
            got[key] != want[key] for key in want if key not in ("value", "gradients")
        )
        wrong = wrong or not _numbers_close(got["value"], want["value"])
        gradients = got.get("gradients") or {}
        wrong = wrong or list(gradients) != list(want["gradients"])
        wrong = wrong or not all(
            _numbers_close(gradients[name], grad) for name, grad in want["gradients"].items()
        )
        if wrong:
            raise AssertionError(
                f"{what} answered {got_line[:400]} where the worker has {want_line[:400]}"
            )


def write_mixed(path: Path, count: int) -> Path:
    with path.open("w") as out:
        for request in baselines.mixed_requests(count):
            out.write(json.dumps(request) + "\n")
    return path


def run_mixed_batch(config: Config, report: Report) -> None:
    count = config.size(full=100_000, quick=5_000)
    path = write_mixed(config.workdir / "batch-mixed.jsonl", count)
    python = config.gradcalc_python
    script = str(config.gradcalc_script)
    worker_name = "hand-written NumPy worker"
    commands = {
        worker_name: [python, str(REPO / "benchmarks" / "baselines.py"), "mixed-batch", str(path)],
        "gradcalc batch --jobs 1": [script, "batch", str(path), "--jobs", "1"],
        "gradcalc batch --jobs 2": [script, "batch", str(path), "--jobs", "2"],
    }
    checked: dict[str, str] = {}

    def check(name: str) -> None:
        done = run_process(commands[name])
        if done.returncode != 0:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr[-1000:]}")
        if name != worker_name:
            compare_results(done.stdout, checked[worker_name], name)
        checked[name] = done.stdout

    for name in commands:
        if name == worker_name or worker_name in checked:
            attempt(report, "W6", f"mixed batch: {name} (output check)", lambda n=name: check(n))

    def timed(name: str):
        def run_once():
            done = run_process(commands[name])
            if done.returncode != 0 or done.stdout != checked[name]:
                raise RuntimeError(f"{name} printed something else than its checked run")
            return done

        return run_once

    samples = interleaved(
        {name: timed(name) for name in checked},
        config.runs(full=5, quick=2),
        report,
        "W6",
        warmup=0,
    )
    seconds = {
        name: report.measure(
            "W6",
            f"mixed batch, {count} requests: {name.removeprefix('gradcalc ')}",
            found,
            "s",
            note=f"{count / statistics.median(found):,.0f} requests/s",
        )
        for name, found in samples.items()
    }
    one, two = seconds.get("gradcalc batch --jobs 1"), seconds.get("gradcalc batch --jobs 2")
    report.target(
        "W6", "mixed batch --jobs 1 / NumPy worker (time)", one, seconds.get(worker_name), 1.5
    )
    report.target(
        "W6", "mixed batch --jobs 1 / --jobs 2 (speed-up)", one, two, 1.6, lower_is_better=False
    )
    attempt(report, "W6", "mixed batch by kind", lambda: mixed_by_kind(config, report))


def mixed_by_kind(config: Config, report: Report) -> None:
    """Each kind in this process: `gradcalc.api.run_line` against the worker's function, in
    microseconds per request (no start-up), round robin. Says where the batch's time goes."""
    from gradcalc.api import run_line

    per_kind = config.size(full=2_000, quick=300)
    requests = baselines.mixed_requests(per_kind * len(baselines.MIXED_FORMULAS), seed=1)
    worker: dict[str, float] = {}
    for kind, formula in baselines.MIXED_FORMULAS.items():
        lines = [json.dumps(r) for r in requests if r["formula"] == formula]
        for line in lines[:5]:
            text, _ = run_line(line)
            want = json.dumps(baselines.answer_mixed(json.loads(line)))
            compare_results(text, want, f"run_line on {kind}")

        def gradcalc_side(lines: list[str] = lines) -> None:
            for line in lines:
                run_line(line)

        def worker_side(lines: list[str] = lines) -> None:
            for line in lines:
                json.dumps(baselines.answer_mixed(json.loads(line)))

        samples = interleaved(
            {"gradcalc": gradcalc_side, "worker": worker_side},
            config.runs(full=5, quick=2),
            report,
            "W6",
        )
        if len(samples) < 2:
            continue
        found = {
            side: report.measure(
                "W6",
                f"in-process {kind}: {side}",
                [s * 1e6 / len(lines) for s in runs],
                "µs/request",
            )
            for side, runs in samples.items()
        }
        found[
            "gradcalc"
        ].note = f"{found['gradcalc'].median / found['worker'].median:.1f}x the worker"
        worker[kind] = found["worker"].median
    if config.torch_python is not None:
        attempt(
            report, "W6", "PyTorch eager by kind", lambda: torch_by_kind(config, report, worker)
        )


def torch_by_kind(config: Config, report: Report, worker: dict[str, float]) -> None:
    """The same requests answered by PyTorch eager autograd (benchmarks/external.py,
    another interpreter): what a general tape-based engine costs per request here."""
    per_kind = config.size(full=2_000, quick=300)
    answer = external(
        config, "torch", "w6", per_kind=per_kind, repeats=config.runs(full=5, quick=2)
    )
    if answer["error"] > MIXED_TOLERANCE:
        raise AssertionError(f"PyTorch differs from the worker by {answer['error']:.2g}")
    for kind, samples in answer["samples"].items():
        found = report.measure(
            "W6", f"in-process {kind}: PyTorch eager", [s * 1e6 for s in samples], "µs/request"
        )
        if kind in worker:
            found.note = f"{found.median / worker[kind]:.1f}x the worker"
