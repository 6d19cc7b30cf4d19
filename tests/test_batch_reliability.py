"""``gradcalc batch`` under hostile input and signals (issue 16's batch items).

A bad line costs an error line, never the batch: deeply nested JSON, ids that
strict JSON cannot echo, integers beyond float64, lines past the maximum
length, an endless line. The progress bar never captures standard output.
``--jobs`` is capped at the cores available. SIGINT and SIGTERM end the
workers and the parent at once.
"""

from __future__ import annotations

import io
import json
import os
import pty
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from gradcalc import api
from gradcalc.cli import batch
from gradcalc.lines import ENDLESS_FACTOR, EndlessLine, TooLong, line_blocks

GRADCALC = [sys.executable, "-m", "gradcalc"]


def request(i: int) -> str:
    return json.dumps({"id": i, "formula": "3*a**3 - b**2", "vars": {"a": i % 7, "b": 6}})


def strict(line: str) -> dict:
    def reject(constant: str) -> object:
        raise AssertionError(f"non-strict JSON constant {constant}")

    return json.loads(line, parse_constant=reject)


def answers(text: str) -> list[dict]:
    return [strict(line) for line in text.splitlines()]


# ---------------------------------------------------------------- hostile lines


def test_deeply_nested_json_is_an_error_line_and_its_block_goes_on() -> None:
    deep = "[" * 1000 + "]" * 1000
    deep_object = '{"id": 1, "formula": "a", "vars": {"a": ' + "[" * 5000 + "]" * 5000 + "}}"
    block = "\n".join([request(1), deep, deep_object, request(2)]) + "\n"
    text, answered, failed = api.run_block(block.encode(), 1)
    out = answers(text)
    assert (answered, failed) == (4, 2)
    assert [o["id"] for o in out] == [1, None, None, 2]
    for o, line in zip(out[1:3], (2, 3), strict=True):
        assert o["error"]["type"] == "LimitError"
        assert o["error"]["message"] == f"input line {line}: the JSON nests too deeply"
    reply, ok = api.run_line(deep)
    assert not ok and strict(reply)["error"]["type"] == "LimitError"


@pytest.mark.parametrize("bad_id", ["NaN", "Infinity", "-Infinity", "1e400", "[1, NaN]"])
def test_an_id_strict_json_cannot_echo_is_an_error_line(bad_id: str) -> None:
    line = '{"id": ID, "formula": "a", "vars": {"a": 1}}'.replace("ID", bad_id)
    text, answered, failed = api.run_block(f"{line}\n{request(5)}\n".encode(), 7)
    first, second = answers(text)
    assert (answered, failed) == (2, 1)
    assert first["id"] is None and "internal" not in first["error"]
    assert first["error"]["message"].startswith("input line 7: request 'id' ")
    assert second["id"] == 5 and "value" in second


def test_huge_integers_in_a_request_are_error_lines_not_internal_errors() -> None:
    big = "9" * 400
    lines = [
        line.replace("BIG", big)
        for line in (
            '{"id": 1, "formula": "a*2", "vars": {"a": BIG}}',
            '{"id": 2, "formula": "sum(a)", "vars": {"a": [1, BIG]}}',
            '{"id": 3, "formula": "a", "vars": {"a": 1}, "grad_output": BIG}',
            '{"id": 4, "formula": "a", "vars": {"a": BIG}, "dtype": "float32"}',
            '{"id": BIG, "formula": "a", "vars": {"a": 1}}',  # a big id is fine JSON
            '{"id": 6, "formula": "a*2", "vars": {"a": "BIG"}}',  # a formula: Infinity
        )
    ]
    out = answers(api.run_block(("\n".join(lines) + "\n").encode(), 1)[0])
    assert [o["id"] for o in out] == [1, 2, 3, 4, int(big), 6]
    for number, o in enumerate(out[:4], start=1):
        assert o["error"]["type"] == "ValueError" and "internal" not in o["error"]
        assert o["error"]["message"].startswith(f"input line {number}: request holds a number")
    assert out[4]["value"] == 1.0
    assert out[5]["value"] == "Infinity"


# ---------------------------------------------------------------- reading lines


def reference_blocks(data: bytes, max_line: int) -> list[tuple[bytes | TooLong, int]]:
    """What line_blocks must give, line by line: each line, or TooLong, with its number."""
    out: list[tuple[bytes | TooLong, int]] = []
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        if last and not line:
            break
        if len(line) > max_line:
            out.append((TooLong(max_line), number))
        else:
            out.append((line if last else line + b"\n", number))
    return out


def by_line(items: list[tuple[bytes | TooLong, int]]) -> list[tuple[bytes | TooLong, int]]:
    """Blocks split back into lines, each with its number."""
    out: list[tuple[bytes | TooLong, int]] = []
    for block, first in items:
        if isinstance(block, TooLong):
            out.append((block, first))
            continue
        for i, line in enumerate(block.splitlines(keepends=True)):
            out.append((line, first + i))
    return out


def chunked(data: bytes, size: int):
    stream = io.BytesIO(data)
    return lambda n: stream.read(min(n, size))


@pytest.mark.parametrize("seed", range(6))
def test_line_blocks_cut_whole_lines_and_mark_each_too_long_one(seed: int) -> None:
    rng = random.Random(seed)
    max_line = rng.choice([5, 16, 40])
    lines = [b"x" * rng.choice([0, 1, max_line - 1, max_line, max_line + 1, 3 * max_line, 200])
             for _ in range(60)]  # fmt: skip
    data = b"\n".join(lines) + rng.choice([b"", b"\n"])
    want = reference_blocks(data, max_line)
    for chunk in (1, 3, max_line, 64, 1 << 16):
        got = list(line_blocks(chunked(data, chunk), chunk, max_line, endless_after=None))
        assert by_line(got) == want, (chunk, max_line)


def test_a_long_line_is_read_in_linear_time() -> None:
    """64 MiB in 64 KiB reads: joining once, not re-copying what was read (35 s per 100 MB)."""
    line = b"1" * (64 << 20)
    start = time.perf_counter()
    got = list(line_blocks(chunked(line + b"\n", 1 << 16), 1 << 16, max_line=1 << 30))
    assert time.perf_counter() - start < 3
    assert len(got) == 1 and len(got[0][0]) == len(line) + 1


def test_an_endless_line_ends_the_input_after_every_earlier_line() -> None:
    data = b"1\n2\n" + b"0" * (ENDLESS_FACTOR * 100 + 500)
    got = []
    with pytest.raises(EndlessLine, match="input line 3 goes on"):
        for item in line_blocks(chunked(data, 64), 64, max_line=100):
            got.append(item)
    assert by_line(got) == [(b"1\n", 1), (b"2\n", 2), (TooLong(100), 3)]


def test_too_long_lines_are_error_lines_in_order_with_jobs_1_and_2(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    long_line = json.dumps({"id": "long", "formula": "+".join(["a"] * 60_000)})
    path.write_text("\n".join([request(1), long_line, request(3), long_line]) + "\n")
    for jobs in ("1", "2"):
        run = subprocess.run(
            [*GRADCALC, "batch", str(path), "--jobs", jobs, "--max-line-bytes", "100KiB"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 1 and run.stderr == ""
        out = answers(run.stdout)
        assert [o["id"] for o in out] == [1, None, 3, None]
        assert out[1]["error"] == {
            "type": "LimitError",
            "message": "input line 2: the line is longer than 102,400 bytes",
            "hint": "raise the maximum with --max-line-bytes",
        }
        assert out[3]["error"]["message"].startswith("input line 4:")


def test_batch_of_dev_zero_ends() -> None:
    run = subprocess.run([*GRADCALC, "batch", "/dev/zero"], capture_output=True, timeout=60)
    assert run.returncode == 1
    (out,) = answers(run.stdout.decode())
    assert out["error"]["message"].startswith("input line 1: the line is longer than")
    assert b"the rest of the input is not read" in run.stderr


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_an_endless_standard_input_keeps_every_answer_before_it(jobs: str) -> None:
    good = "".join(request(i) + "\n" for i in range(3000)).encode()
    with subprocess.Popen(
        [*GRADCALC, "batch", "-", "--jobs", jobs, "--max-line-bytes", "64KiB"],
        bufsize=0,  # nothing left to flush into the closed pipe at exit
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:

        def feed() -> None:
            assert proc.stdin is not None
            try:
                proc.stdin.write(good)
                for _ in range(ENDLESS_FACTOR + 8):
                    proc.stdin.write(b"0" * (64 << 10))
                proc.stdin.close()
            except BrokenPipeError:
                pass

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        assert proc.stdout is not None and proc.stderr is not None
        stdout = proc.stdout.read()  # (not communicate(): it would close stdin under the writer)
        stderr = proc.stderr.read()
        proc.wait(timeout=60)
        writer.join(10)
    assert proc.returncode == 1
    out = answers(stdout.decode())
    assert [o["id"] for o in out] == [*range(3000), None]
    assert out[-1]["error"]["message"].startswith("input line 3001: the line is longer")
    assert b"input line 3001 goes on" in stderr


# ---------------------------------------------------------------- progress bar


def run_on_a_terminal(args: list[str], data: bytes, stdout_too: bool) -> tuple[int, bytes, bytes]:
    """Run with standard error (and with ``stdout_too`` standard output) on a pseudo-terminal;
    (exit code, what the pipe got, what the terminal got)."""
    master, slave = pty.openpty()
    seen: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: the terminal's last writer is gone
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    with subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=slave if stdout_too else subprocess.PIPE,
        stderr=slave,
        env=env,
    ) as proc:
        os.close(slave)
        out, _ = proc.communicate(data, timeout=120)
    reader.join(10)
    os.close(master)
    return proc.returncode, out or b"", b"".join(seen)


def test_progress_bar_on_a_terminal_never_captures_the_results() -> None:
    lines = "".join(request(i) + "\n" for i in range(2000)).encode()
    want = subprocess.run([*GRADCALC, "batch", "-"], input=lines, capture_output=True).stdout
    for jobs in ("1", "2"):
        code, out, terminal = run_on_a_terminal(
            [*GRADCALC, "batch", "-", "--jobs", jobs], lines, stdout_too=False
        )
        assert code == 0
        assert out == want  # every result in the pipe ...
        assert b"2,000 lines" in terminal  # ... the bar on the terminal
        assert b'"id"' not in terminal


def test_no_progress_bar_on_the_terminal_the_results_go_to() -> None:
    lines = "".join(request(i) + "\n" for i in range(50)).encode()
    code, _, terminal = run_on_a_terminal([*GRADCALC, "batch", "-"], lines, stdout_too=True)
    assert code == 0
    assert terminal.count(b'"schema_version"') == 50
    assert b"lines/s" not in terminal


def test_progress_wanted_follows_the_terminals() -> None:
    class Stream:
        def __init__(self, tty: bool, fd: int = -1) -> None:
            self.tty, self.fd = tty, fd

        def isatty(self) -> bool:
            return self.tty

        def fileno(self) -> int:
            return self.fd

    assert not batch.progress_wanted(Stream(False), Stream(False))
    assert batch.progress_wanted(Stream(False), Stream(True))
    assert not batch.progress_wanted(Stream(True), Stream(False))
    master, slave = pty.openpty()
    other_master, other_slave = pty.openpty()
    try:
        assert not batch.progress_wanted(Stream(True, slave), Stream(True, slave))
        assert batch.progress_wanted(Stream(True, other_slave), Stream(True, slave))
    finally:
        for fd in (master, slave, other_master, other_slave):
            os.close(fd)


# ---------------------------------------------------------------- --jobs


def test_jobs_are_capped_at_the_cores_available_unless_forced(monkeypatch) -> None:
    monkeypatch.setattr(batch, "available_cores", lambda: 3)
    assert batch.cap_jobs(100_000) == 3
    assert batch.cap_jobs(2) == 2
    assert batch.cap_jobs(0) == 3
    assert batch.cap_jobs(100_000, force=True) == 100_000


def test_jobs_100000_runs_with_one_worker_per_core(tmp_path: Path) -> None:
    path = tmp_path / "few.jsonl"
    path.write_text("".join(request(i) + "\n" for i in range(20)))
    code = (
        "import sys, concurrent.futures as cf\n"
        "made = []\n"
        "class Pool(cf.ProcessPoolExecutor):\n"
        "    def __init__(self, max_workers=None, **kw):\n"
        "        made.append(max_workers)\n"
        "        super().__init__(max_workers=max_workers, **kw)\n"
        "cf.ProcessPoolExecutor = Pool\n"
        "from gradcalc.cli.main import run\n"
        f"code = run(['batch', {str(path)!r}, '--jobs', '100000'])\n"
        "sys.stderr.write(f'POOL {made}')\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(run.stdout.splitlines()) == 20
    cores = batch.available_cores()
    assert run.stderr.endswith(f"POOL {[cores] if cores > 1 else []}")


# ---------------------------------------------------------------- signals


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"]
)
def test_a_signal_ends_workers_and_parent_within_a_second(
    jobs: str, signum: int, code: int
) -> None:
    runaway = json.dumps({"id": "loop", "formula": "x = 0\nwhile True: x = 1"})
    with subprocess.Popen(
        [*GRADCALC, "batch", "-", "--jobs", jobs, "--max-iterations", "1000000000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            proc.stdin.write((request(1) + "\n").encode())
            proc.stdin.flush()
            assert strict(proc.stdout.readline().decode())["id"] == 1  # answered, written
            for _ in range(int(jobs)):  # one runaway request per worker
                proc.stdin.write((runaway + "\n").encode())
                proc.stdin.flush()
                time.sleep(0.2)
            time.sleep(0.5)  # the workers are spinning
            children = psutil.Process(proc.pid).children(recursive=True)
            assert len(children) == (0 if jobs == "1" else int(jobs))
            started = time.monotonic()
            proc.send_signal(signum)
            assert proc.wait(timeout=10) == code
            elapsed = time.monotonic() - started
            _, alive = psutil.wait_procs(children, timeout=1)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert alive == []
        assert elapsed < 1.0
        assert b"Traceback" not in proc.stderr.read()


# ---------------------------------------------------------------- a worker dies, output fails


KILLER = (
    "import os, sys\n"
    "from gradcalc.cli import batch\n"
    "real = batch._work\n"
    "def work(block, first, limits):\n"
    "    if isinstance(block, bytes) and b'KILLME' in block:\n"
    "        os.kill(os.getpid(), 9)  # as the kernel's OOM killer would\n"
    "    return real(block, first, limits)\n"
    "batch._work = work\n"
    "sys.exit(batch.run_batch(sys.argv[1], jobs=2, progress=False))\n"
)


def test_a_request_that_kills_its_worker_is_an_error_line_and_the_batch_goes_on(
    tmp_path: Path,
) -> None:
    lines = [request(i) for i in range(3000)]
    lines[1500] = json.dumps({"id": "boom", "formula": "KILLME"})
    lines[2900] = "not JSON, KILLME"
    path = tmp_path / "killer.jsonl"
    path.write_text("\n".join(lines) + "\n")
    plain = subprocess.run([*GRADCALC, "batch", str(path)], capture_output=True, timeout=60)
    run = subprocess.run(
        [sys.executable, "-c", KILLER, str(path)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 1 and run.stderr == ""
    got, want = run.stdout.splitlines(), plain.stdout.decode().splitlines()
    assert len(got) == len(want) == 3000
    for number, (line, expected) in enumerate(zip(got, want, strict=True), start=1):
        if number in (1501, 2901):
            out = strict(line)
            assert out["id"] == ("boom" if number == 1501 else None)
            assert out["error"]["type"] == "LimitError"
            assert out["error"]["message"].startswith(
                f"input line {number}: the worker process answering this request died "
                "(killed by SIGKILL)"
            )
        else:
            assert line == expected


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_full_disk_is_one_clear_message(jobs: str, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(request(i) + "\n" for i in range(100)))
    with open("/dev/full", "wb") as full:
        run = subprocess.run(
            [*GRADCALC, "batch", str(path), "--jobs", jobs],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert run.returncode == 1
    assert run.stderr == "gradcalc batch: cannot write the results: No space left on device\n"


def test_closed_standard_input_or_output_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(request(1) + "\n")
    command = " ".join([*GRADCALC, "batch"])
    for shell, message in (
        (f"{command} - <&-", "cannot read '-': standard input is closed"),
        (f"{command} {path} >&-", "standard output is closed"),
    ):
        run = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, shell
        assert message in run.stderr and "internal error" not in run.stderr
