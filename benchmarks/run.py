"""Run gradcalc's benchmarks side by side with their references and check issues 6 and 12's targets.

    python benchmarks/run.py [--quick] [--only W1,W3] [--json out.json]
                             [--markdown benchmarks/RESULTS.md]
                             [--torch-python /path/to/python-with-torch]

PyTorch (and JAX) are found in this interpreter, or in the one named by
--torch-python / $GRADCALC_BENCH_TORCH_PYTHON (--jax-python /
$GRADCALC_BENCH_JAX_PYTHON), which runs their side in a subprocess; without
them their ratios are SKIPped with a note. Use the venv's own python: a
pyenv shim would add its start-up to every process timed in W1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (
    w1_startup,
    w2_scalar,
    w3_elementwise,
    w4_mlp,
    w5_parse,
    w6_batch,
)
from benchmarks.harness import Config, Report, environment, markdown

WORKLOADS = {
    "W1": w1_startup.run,
    "W2": w2_scalar.run,
    "W3": w3_elementwise.run,
    "W4": w4_mlp.run,
    "W5": w5_parse.run,
    "W6": w6_batch.run,
}


def find_library_python(library: str, given: str | None) -> str | None:
    """The interpreter that runs `library`'s side: given, from the environment, or this one."""
    given = given or os.environ.get(f"GRADCALC_BENCH_{library.upper()}_PYTHON")
    if given:
        return given
    return sys.executable if importlib.util.find_spec(library) is not None else None


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes, under a minute")
    parser.add_argument("--only", help="comma-separated workloads, e.g. W1,W3")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--markdown", type=Path, help="write the tables (RESULTS.md) here")
    parser.add_argument("--torch-python", help="a Python that imports torch (another venv)")
    parser.add_argument("--jax-python", help="a Python that imports jax")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink sizes (smoke tests)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Report:
    arguments = parse_arguments(argv)
    chosen = (
        [w.strip().upper() for w in arguments.only.split(",")]
        if arguments.only
        else list(WORKLOADS)
    )
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        raise SystemExit(
            f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}"
        )
    config = Config(
        quick=arguments.quick,
        torch_python=find_library_python("torch", arguments.torch_python),
        jax_python=find_library_python("jax", arguments.jax_python),
        scale=arguments.scale,
    )
    report = Report(environment=environment(config))
    if config.torch_python is None:
        report.note("all", "PyTorch not found: its figures are skipped (--torch-python)")
    if config.jax_python is None:
        report.note("all", "JAX not found: its figures are skipped (--jax-python)")
    for name in chosen:
        start = time.perf_counter()
        print(f"{name} ...", file=sys.stderr, flush=True)
        WORKLOADS[name](config, report)
        print(f"{name} done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)

    report.environment["load_average_end"] = os.getloadavg()
    tables = markdown(report)
    print(tables)
    if arguments.json:
        arguments.json.write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    if arguments.markdown:
        arguments.markdown.write_text(results_page(report, tables))
    return report


def results_page(report: Report, tables: str) -> str:
    env = report.environment
    blas = "; ".join(
        f"{lib.get('internal_api')} {lib.get('architecture')} ({lib.get('num_threads')} threads)"
        for lib in env["blas"].get("libraries", [])
    )
    variables = ", ".join(
        f"{k}={env['blas'].get(k)}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    )
    command = "python " + " ".join(shlex.quote(a) for a in env["argv"])
    return (
        "# Benchmark results\n\n"
        f"Produced by `{command}` on {env['date']} (commit {env['commit']}).\n\n"
        f"Machine: {env['cpu']}, {env['cores']} cores; Python {env['python']}; NumPy "
        f"{env['numpy']}, BLAS: {blas or 'unknown'} ({variables}).\n\n"
        "Load average (1, 5, 15 min) at the start "
        f"{', '.join(f'{x:.1f}' for x in env['load_average'])}, at the end "
        f"{', '.join(f'{x:.1f}' for x in env['load_average_end'])}; children ran without "
        f"{', '.join(env['removed_from_children']) or 'no variable removed'}.\n\n"
        "Every ratio is taken between figures of this one run; targets are issues 6 and 12's.\n\n"
        f"{tables}\n"
    )


if __name__ == "__main__":
    main()
