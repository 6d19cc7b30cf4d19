"""Where gradcalc's side of a workload spends its time: cProfile, top functions by own time.

    python benchmarks/profiling.py w2-api|w2-formula|w3|w4|w5|w6|w6-mixed [--top 25] [--quick]

Only gradcalc's side runs (the references need no profile). cProfile's
per-call overhead inflates tiny functions, so read it for *where*, and the
benchmark for *how much*. w6 profiles `run_request` on the seed's batch
requests in-process, w6-mixed `run_line` on W6's mixed batch lines. For W1's
one-shot commands use `python -X importtime` or `python -m cProfile -s
tottime $(which gradcalc) ARGS` on the installed script.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import baselines, w2_scalar, w3_elementwise, w4_mlp, w5_parse, w6_batch


def _w3(quick: bool) -> Callable[[], object]:
    leaf = w3_elementwise.gradcalc_leaf(baselines.elementwise_input(10**6, "float64"))
    return lambda: [w3_elementwise.elementwise_gradcalc(leaf) for _ in range(3 if quick else 10)]


def _w4(quick: bool) -> Callable[[], object]:
    tensors = w4_mlp.gradcalc_tensors(baselines.mlp_inputs("float32"))
    return lambda: [w4_mlp.mlp_gradcalc(**tensors) for _ in range(3 if quick else 10)]


def _w5(quick: bool) -> Callable[[], object]:
    from gradcalc.parser import parse

    text = w5_parse.generated_program(200_000 if quick else 1_000_000)
    parse("a")
    return lambda: parse(text)


def _w6(quick: bool) -> Callable[[], object]:
    import json

    from gradcalc.api import run_request

    count = 2_000 if quick else 20_000
    requests = [
        {
            "id": i,
            "formula": w6_batch.FORMULA,
            "vars": dict(zip("ab", w6_batch._values(i), strict=True)),
        }
        for i in range(count)
    ]
    return lambda: [json.dumps(run_request(request)) for request in requests]


def _w6_mixed(quick: bool) -> Callable[[], object]:
    import json

    from gradcalc.api import run_line

    lines = [json.dumps(r) for r in baselines.mixed_requests(2_000 if quick else 20_000)]
    return lambda: [run_line(line) for line in lines]


WORKLOADS: dict[str, Callable[[bool], Callable[[], object]]] = {
    "w2-api": lambda quick: lambda: w2_scalar.chain_gradcalc_api(5_000 if quick else 25_000),
    "w2-formula": lambda quick: (
        lambda: w2_scalar.chain_gradcalc_formula(5_000 if quick else 25_000)
    ),
    "w3": _w3,
    "w4": _w4,
    "w5": _w5,
    "w6": _w6,
    "w6-mixed": _w6_mixed,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args(argv)
    work = WORKLOADS[arguments.workload](arguments.quick)
    work()
    profiler = cProfile.Profile()
    profiler.runcall(work)
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(arguments.top)
    stats.sort_stats("cumulative").print_stats(arguments.top)


if __name__ == "__main__":
    main()
