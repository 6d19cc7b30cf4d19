"""``gradcalc batch``: order, ids, malformed lines, --jobs, exit codes, streaming."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from gradcalc import api
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
    with subprocess.Popen(
        [*GRADCALC, "batch", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
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


# ---------------------------------------------------------------- blocks and workers


def test_line_numbers_survive_small_blocks(monkeypatch, capsysbinary) -> None:
    """Blocks cut anywhere: every line is answered once, in order, with its own line number."""
    from gradcalc.cli import batch

    text = MIXED.replace("this is not json", "not json either") * 3
    source = io.BytesIO(text.encode("utf-8"))
    for size in (7, 64, 1 << 15):
        monkeypatch.setattr(batch, "BLOCK_BYTES", size)
        source.seek(0)
        blocks = list(batch._blocks(source))
        assert b"".join(block for block, _ in blocks) == text.encode("utf-8")
        firsts = [first for _, first in blocks]
        counts = [block.count(b"\n") for block, _ in blocks]
        assert firsts == [1 + sum(counts[:i]) for i in range(len(blocks))]
    replies = [api.run_block(block, first)[0] for block, first in blocks]
    out = [strict(line) for line in "".join(replies).splitlines()]
    bad_json = [o["error"]["message"] for o in out if "not valid JSON" in str(o)]
    assert [m.split(":")[0] for m in bad_json] == ["input line 3", "input line 13", "input line 23"]


def test_run_block_counts_and_skips_blank_lines() -> None:
    block = (request(1) + "\r\n\n   \n" + '{"id": 2, "formula": "1/0"}\n').encode("utf-8")
    text, answered, failed = api.run_block(block, 10)
    lines = text.splitlines()
    assert answered == 2 and failed == 0 and len(lines) == 2
    assert [strict(line)["id"] for line in lines] == [1, 2]
    assert api.run_block(b"\n \n", 1) == ("", 0, 0)


def test_a_line_separator_inside_a_json_string_is_not_a_line_break() -> None:
    line = json.dumps({"id": "a\u2028b", "formula": "2*x", "vars": {"x": 1}}, ensure_ascii=False)
    text, answered, failed = api.run_block((line + "\n").encode("utf-8"))
    assert answered == 1 and failed == 0
    assert strict(text)["id"] == "a\u2028b"


def test_jobs_2_streams_and_the_parent_never_imports_numpy() -> None:
    code = (
        "import sys\n"
        "from gradcalc.cli.batch import run_batch\n"
        "code = run_batch('-', jobs=2, progress=False)\n"
        "sys.stderr.write(f'numpy in parent: {\"numpy\" in sys.modules}\\n')\n"
        "sys.exit(code)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(request(1) + "\n")
        proc.stdin.flush()
        assert strict(proc.stdout.readline())["id"] == 1  # answered before the input ends
        proc.stdin.write(request(2) + "\n")
        proc.stdin.close()
        assert strict(proc.stdout.readline())["id"] == 2
        assert proc.wait(timeout=60) == 0
        assert proc.stderr.read() == "numpy in parent: False\n"


def test_run_line_is_picklable_for_other_map_engines() -> None:
    import pickle

    assert pickle.loads(pickle.dumps(api.run_line)) is api.run_line
    assert pickle.loads(pickle.dumps(api.run_block)) is api.run_block
    reply, ok = api.run_line(request(3))
    assert ok and strict(reply)["id"] == 3
