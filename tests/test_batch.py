"""``gradcalc batch``: order, ids, malformed lines, --jobs, exit codes, streaming."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from gradcalc.cli.app import app

runner = CliRunner()
GRADCALC = [sys.executable, "-m", "gradcalc"]


def strict(line: str) -> dict:
    def reject(constant: str) -> object:
        raise AssertionError(f"non-strict JSON constant {constant}")

    return json.loads(line, parse_constant=reject)


def request(i: int, **extra: object) -> str:
    body = {"id": i, "formula": "3*a**3 - b**2", "vars": {"a": i % 7, "b": 6}, **extra}
    return json.dumps(body)


MIXED = (
    "\n".join(
        [
            request(1),
            '{"id": 2, "formula": "3*(a", "vars": {"a": 1}}',
            "this is not json",
            "",
            '{"id": 4, "vars": {"a": 1}}',
            "[1, 2, 3]",
            '{"id": "six", "formula": "sum(x**2)", "vars": {"x": [1, 2, 3]}, "wrt": ["x"]}',
            '{"id": 7, "formula": "log(a)", "vars": {"a": -1}}',
            '{"id": 8, "formula": "a*w", "vars": {"a": 2, "w": "ones(2, 1)"}}',
            '{"id": 9, "formula": "x.__class__", "vars": {"x": 1}}',
        ]
    )
    + "\n"
)


def check_mixed(lines: list[str]) -> None:
    out = [strict(line) for line in lines]
    assert [o["id"] for o in out] == [1, 2, None, 4, None, "six", 7, 8, 9]
    assert out[0]["value"] == 3 * 1**3 - 36.0 and out[0]["gradients"] == {"a": 9.0, "b": -12.0}
    assert out[1]["error"]["type"] == "ParseError"
    assert "not valid JSON" in out[2]["error"]["message"]
    assert "formula" in out[3]["error"]["message"]
    assert "JSON object" in out[4]["error"]["message"]
    assert out[5]["value"] == 14.0 and out[5]["gradients"] == {"x": [2.0, 4.0, 6.0]}
    assert out[6]["value"] == "NaN" and "note" in out[6]
    assert out[7]["gradients"]["w"] == [[2.0], [2.0]]
    assert "error" in out[8]
    for o in out:
        assert ("error" in o) != ("schema_version" in o)


def test_mixed_lines_in_order_with_errors_and_exit_1() -> None:
    result = runner.invoke(app, ["batch", "-"], input=MIXED)
    assert result.exit_code == 1
    check_mixed(result.stdout.splitlines())
    assert "Traceback" not in result.output


def test_all_good_lines_exit_0(tmp_path: Path) -> None:
    path = tmp_path / "good.jsonl"
    path.write_text("".join(request(i) + "\n" for i in range(5)), encoding="utf-8")
    result = runner.invoke(app, ["batch", str(path)])
    assert result.exit_code == 0
    values = [strict(line)["value"] for line in result.stdout.splitlines()]
    assert values == [3.0 * (i % 7) ** 3 - 36 for i in range(5)]


def test_jobs_2_gives_the_same_output_as_jobs_1(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text(MIXED * 30, encoding="utf-8")
    one = subprocess.run([*GRADCALC, "batch", str(path)], capture_output=True, text=True)
    two = subprocess.run(
        [*GRADCALC, "batch", str(path), "--jobs", "2"], capture_output=True, text=True
    )
    assert one.returncode == two.returncode == 1
    assert one.stdout == two.stdout
    assert one.stderr == two.stderr == ""
    check_mixed(one.stdout.splitlines()[:9])


def test_missing_file_is_a_usage_error() -> None:
    result = runner.invoke(app, ["batch", "/nonexistent/requests.jsonl"])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_many_lines_stream_in_order(tmp_path: Path) -> None:
    """10,000 lines (the 100,000-line run is benchmark W6), through two worker processes."""
    count, jobs = 10_000, "2"
    path = tmp_path / "many.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(request(i) + "\n")
    run = subprocess.run(
        [*GRADCALC, "batch", str(path), "--jobs", jobs], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert len(lines) == count
    for i in (0, 1, 4321, count - 1):
        out = strict(lines[i])
        assert out["id"] == i and out["value"] == 3.0 * (i % 7) ** 3 - 36


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    path.write_text("".join(request(i) + "\n" for i in range(5000)), encoding="utf-8")
    for jobs in ("1", "2"):
        pipeline = f"{sys.executable} -m gradcalc batch {path} --jobs {jobs} | head -1"
        run = subprocess.run(["sh", "-c", pipeline], capture_output=True, text=True)
        assert strict(run.stdout)["id"] == 0
        assert run.stderr == ""


def test_results_appear_before_the_input_ends() -> None:
    """A line's result is written and flushed before the next line is read."""
    proc = subprocess.Popen(
        [*GRADCALC, "batch", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(request(1) + "\n")
    proc.stdin.flush()
    first = strict(proc.stdout.readline())
    assert first["id"] == 1
    proc.stdin.write(request(2) + "\n")
    proc.stdin.close()
    assert strict(proc.stdout.readline())["id"] == 2
    assert proc.wait(timeout=30) == 0


def test_progress_bar_goes_to_stderr_only() -> None:
    lines = request(1) + "\n" + request(2) + "\n"
    result = runner.invoke(app, ["batch", "-", "--progress"], input=lines)
    assert result.exit_code == 0
    assert [strict(line)["id"] for line in result.stdout.splitlines()] == [1, 2]
    assert "2 lines" in result.stderr
    quiet = runner.invoke(app, ["batch", "-", "--no-progress"], input=lines)
    assert quiet.stdout == result.stdout and quiet.stderr == ""
