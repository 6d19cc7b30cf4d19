"""W5 parsing: a generated ~1 MB program through gradcalc's parser and `ast.parse`; grammar load.

The program is valid in both languages (assignments of arithmetic, calls,
keyword arguments, lists, `@`), so the two parsers read the very same text.
Tokens are counted with Python's tokenizer. Grammar load is timed in fresh
processes: `import gradcalc.parser`, then the first `parse("a")` (the
"grammar ready" target: loading the generated tables), with an empty cache
directory (cold) and with the one a previous run filled (warm); Lark's cache
matters only when the generated tables are stale. The first syntax error
after that is timed too (it loads Lark's standalone parser to explain it).
"""

from __future__ import annotations

import ast
import io
import tempfile
import tokenize
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import (
    Config,
    Report,
    attempt,
    child_environment,
    interleaved,
    load_json_line,
    run_process,
)

TEMPLATES = (
    "layer_output_{i:05d} = 0.{n:05d}{n:05d} * sin(hidden_activation_{i:05d}"
    " + offset_vector_{j:03d}) ** 2 - exp(-scale_factor_{i:05d} / 1.5)",
    "layer_output_{i:05d} = sum((weight_matrix_{j:03d} @ layer_inputs_{i:05d}"
    " - [1.{n:05d}, 2.5]) ** 2, axis=0) / 3.0",
    "layer_output_{i:05d} = maximum(hidden_activation_{i:05d}, offset_vector_{j:03d})"
    " * (scale_factor_{i:05d} - 0.{n:05d}) / (hidden_activation_{i:05d} + 2.5e-3)",
)
NOT_PARSED_TOKENS = {tokenize.NL, tokenize.COMMENT, tokenize.ENCODING, tokenize.ENDMARKER}
LOAD_SCRIPT = (
    "import json, time\n"
    "start = time.perf_counter()\n"
    "import gradcalc.parser\n"
    "imported = time.perf_counter()\n"
    "gradcalc.parser.parse('a')\n"
    "ready = time.perf_counter()\n"
    "try:\n"
    "    gradcalc.parser.parse('a b')\n"
    "except gradcalc.parser.ParseError:\n"
    "    pass\n"
    "explained = time.perf_counter()\n"
    "times = {'import_ms': (imported - start) * 1e3, 'parse_ms': (ready - imported) * 1e3,\n"
    "         'error_ms': (explained - ready) * 1e3}\n"
    "built = getattr(gradcalc.parser, '_parser', None)\n"
    "times['source'] = getattr(built(), 'source', '?') if built else '?'\n"
    "print(json.dumps(times))\n"
)


def generated_program(target_bytes: int) -> str:
    """Lines cycling through TEMPLATES until the text reaches target_bytes."""
    lines = []
    size = 0
    index = 0
    while size < target_bytes:
        template = TEMPLATES[index % len(TEMPLATES)]
        line = template.format(i=index, j=index % 997, n=(index * 7919) % 100_000)
        lines.append(line)
        size += len(line) + 1
        index += 1
    return "\n".join(lines) + "\n"


def count_tokens(text: str) -> int:
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return sum(1 for token in tokens if token.type not in NOT_PARSED_TOKENS)


def _load_times(
    config: Config, cache_root: Path, runs: int, fresh: bool
) -> tuple[list[float], list[float], list[float], set[str]]:
    imports, parses, errors, sources = [], [], [], set()
    for index in range(runs):
        cache = cache_root / (f"cold-{index}" if fresh else "warm")
        cache.mkdir(exist_ok=True)
        env = child_environment({"TMPDIR": str(cache), "XDG_CACHE_HOME": str(cache)})
        child = run_process([config.python, "-c", LOAD_SCRIPT], env=env)
        if child.returncode != 0:
            raise RuntimeError(child.stderr[-2000:])
        answer = load_json_line(child.stdout)
        imports.append(answer["import_ms"])
        parses.append(answer["parse_ms"])
        errors.append(answer["error_ms"])
        sources.add(answer["source"])
    return imports, parses, errors, sources


def run(config: Config, report: Report) -> None:
    text = generated_program(config.size(full=1_000_000, quick=250_000))
    tokens = count_tokens(text)
    megabytes = len(text.encode()) / 1e6
    repeats = config.runs(full=5, quick=3)
    report.note(
        "W5", f"generated program: {megabytes:.2f} MB, {tokens} tokens, {text.count(chr(10))} lines"
    )

    cases = {"ast.parse": lambda: ast.parse(text)}

    def gradcalc_parser() -> Callable[[], object]:
        from gradcalc.parser import parse

        parse(text)
        return lambda: parse(text)

    parser = attempt(report, "W5", "gradcalc.parser.parse", gradcalc_parser)
    if parser is not None:
        cases["gradcalc.parser.parse"] = parser
    timed = {}
    for name, found in interleaved(cases, repeats, report, "W5").items():
        timed[name] = report.measure("W5", name, [s * 1e6 / tokens for s in found], "µs/token")
        report.measure("W5", f"{name} throughput", [megabytes / s for s in found], "MB/s")
    report.target(
        "W5", "parse / ast.parse", timed.get("gradcalc.parser.parse"), timed["ast.parse"], 2.5
    )

    def load():
        runs = config.runs(full=10, quick=3)
        with tempfile.TemporaryDirectory(dir=config.workdir) as root:
            _, cold, _, cold_sources = _load_times(config, Path(root), runs, fresh=True)
            _load_times(config, Path(root), 1, fresh=False)
            imports, warm, errors, warm_sources = _load_times(config, Path(root), runs, fresh=False)
        report.measure("W5", "import gradcalc.parser (fresh process)", imports, "ms")
        report.measure("W5", "first parse('a'), cold cache", cold, "ms", ", ".join(cold_sources))
        report.measure(
            "W5",
            "first syntax error, after parse('a')",
            errors,
            "ms",
            "explained by the fast driver; Lark's parser only for what it cannot word",
        )
        return report.measure(
            "W5", "first parse('a'), warm cache", warm, "ms", ", ".join(warm_sources)
        )

    ready = attempt(report, "W5", "grammar load", load)
    report.target(
        "W5",
        "grammar ready after import, warm (ms)",
        ready,
        1.0,
        5.0,
        note="absolute: first parse('a') after import, in ms",
    )
    report.details["W5 program"] = {"bytes": len(text), "tokens": tokens, "sample": text[:300]}
