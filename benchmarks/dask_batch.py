"""`gradcalc batch` on a 2-worker local Dask cluster beside `--jobs 1` and `--jobs 2` (not a test).

    .venv/bin/python benchmarks/dask_batch.py                 # 300,000 and 60,000 requests
    .venv/bin/python benchmarks/dask_batch.py --count 20000 --runs 1

Every variant answers the same JSON Lines file (W6's requests: the seed
formula with varying values) and must write byte-identical output. For each
it prints requests per second over the whole process (start-up included:
for Dask, starting the scheduler and two worker processes) and the steady
rate, (long - short requests) / (long - short seconds), which leaves the
fixed costs out. Needs the dask extra (`pip install -e '.[dask]'`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import run_process
from benchmarks.w6_batch import write_requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300_000, help="requests in the long run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each (median)")
    parser.add_argument(
        "--gradcalc",
        default=str(Path(sys.executable).with_name("gradcalc")),
        help="the gradcalc script to time (default: the one beside this Python)",
    )
    args = parser.parse_args(argv)
    variants = {
        "--jobs 1": ["--jobs", "1"],
        "--jobs 2": ["--jobs", "2"],
        "--dask local --jobs 2": ["--dask", "local", "--jobs", "2"],
    }
    long_count, short_count = args.count, max(1, args.count // 5)
    print(f"{os.cpu_count()} cores; python -c pass: {_startup(sys.executable) * 1000:.0f} ms")
    with tempfile.TemporaryDirectory() as work:
        files = {
            count: write_requests(Path(work) / f"requests-{count}.jsonl", count)
            for count in (long_count, short_count)
        }
        reference: dict[int, str] = {}
        seconds: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.runs):  # round robin, so machine noise hits every variant alike
            for name, options in variants.items():
                for count, path in files.items():
                    child = run_process([args.gradcalc, "batch", str(path), *options])
                    if child.returncode != 0:
                        raise SystemExit(f"{name}: exit {child.returncode}: {child.stderr[-2000:]}")
                    if reference.setdefault(count, child.stdout) != child.stdout:
                        raise SystemExit(f"{name}: output differs from --jobs 1's")
                    seconds.setdefault((name, count), []).append(child.seconds)
    print(f"| `gradcalc batch` | {long_count:,} requests, whole process | steady rate |")
    print("|---|---|---|")
    for name in variants:
        t_long = statistics.median(seconds[name, long_count])
        t_short = statistics.median(seconds[name, short_count])
        steady = (long_count - short_count) / max(t_long - t_short, 1e-9)
        print(
            f"| `{name}` | {long_count / t_long:,.0f} req/s ({t_long:.2f} s) "
            f"| {steady:,.0f} req/s |"
        )
    return 0


def _startup(python: str) -> float:
    return statistics.median(run_process([python, "-c", "pass"]).seconds for _ in range(5))


if __name__ == "__main__":
    sys.exit(main())
