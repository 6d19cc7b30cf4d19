"""``gradcalc batch FILE... --dask ADDRESS``: partitions, a local cluster, an external one.

Every cluster here listens on 127.0.0.1 only, and every process a test starts
is ended in its fixture's teardown (with timeouts). The same ~4,000 mixed
lines go through plain ``gradcalc batch``, ``--dask local --jobs 2`` and an
external ``dask scheduler`` + ``dask worker --nworkers 2``; the outputs must
be byte-identical.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradcalc import api
from gradcalc import distributed as dist
from gradcalc.cli import batch
from gradcalc.cli.app import app
from gradcalc.lines import MAX_LINE_BYTES

GRADCALC = [sys.executable, "-m", "gradcalc"]
BIN = Path(sys.executable).parent
TIMEOUT = 180
runner = CliRunner()


# ---------------------------------------------------------------- inputs


def mixed_lines(count: int, seed: int = 17) -> list[bytes]:
    """Good requests (scalars, vectors, matrices, float32), bad JSON, missing formulas,
    formula errors, blank lines, CRLF, non-ASCII and invalid UTF-8, deterministically."""
    rng = random.Random(seed)

    def dumps(obj: object, ascii_only: bool = True) -> bytes:
        return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8")

    kinds = [
        lambda i: dumps(
            {"id": i, "formula": "3*a**3 - b**2", "vars": {"a": rng.randint(-9, 9), "b": 6}}
        ),
        lambda i: dumps(
            {
                "id": i,
                "formula": "sum(x**2 * w)",
                "vars": {"x": [rng.random() for _ in range(4)], "w": "ones(4)"},
                "wrt": ["x"],
            }
        ),
        lambda i: dumps(
            {
                "id": i,
                "formula": "mean((x@w - t)**2)",
                "vars": {"x": "arange(6).reshape(2,3)", "w": "ones(3,1)", "t": [[2], [3]]},
            }
        ),
        lambda i: dumps(
            {
                "id": f"s{i}",
                "formula": "tanh(a) * exp(-a)",
                "vars": {"a": rng.uniform(-3, 3)},
                "dtype": "float32",
            }
        ),
        lambda i: dumps({"id": i, "formula": "3*(a", "vars": {"a": 1}}),
        lambda i: b"this is not json %d" % i,
        lambda i: dumps({"id": i, "vars": {"a": 1}}),
        lambda i: dumps([i, 2, 3]),
        lambda i: dumps({"id": i, "formula": "log(a)", "vars": {"a": -1}}),
        lambda i: dumps({"id": i, "formula": "a + q", "vars": {"a": 1}}),
        lambda i: dumps({"id": i, "formula": "x @ y", "vars": {"x": [1, 2], "y": [1, 2, 3]}}),
        lambda i: dumps(
            {"id": i, "formula": "y = x*2\nsum(y*y)", "vars": {"x": [1, 2]}, "wrt": ["x", "y"]}
        ),
        lambda i: dumps({"id": i, "formula": "sum(randn(3) * a)", "vars": {"a": 2}, "seed": 5}),
        lambda i: dumps({"id": None, "formula": "a*b", "vars": {"a": 2, "b": 3}}),
        lambda i: dumps({"id": i, "formula": "a", "vars": {"a": 1}, "bogus": True}),
        lambda i: dumps({"id": "\u00e9\u2028", "formula": "a*2", "vars": {"a": 1}}, False),
        lambda i: b"",
        lambda i: b"   ",
        lambda i: dumps({"id": i, "formula": "a*2", "vars": {"a": 1}}) + b"\r",
        lambda i: b"\xff\xfe not UTF-8 %d" % i,
    ]
    return [rng.choice(kinds)(i) for i in range(count)]


def plain(*paths: Path) -> subprocess.CompletedProcess[bytes]:
    """What plain ``gradcalc batch`` writes for each file in turn."""
    runs = [
        subprocess.run([*GRADCALC, "batch", str(p)], capture_output=True, timeout=TIMEOUT)
        for p in paths
    ]
    return subprocess.CompletedProcess(
        args=[],
        returncode=max(r.returncode for r in runs),
        stdout=b"".join(r.stdout for r in runs),
        stderr=b"".join(r.stderr for r in runs),
    )


def gradcalc(*args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*GRADCALC, "batch", *args], capture_output=True, timeout=TIMEOUT, **kwargs
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``main``: 4,000 mixed lines; ``second``: 300 more, without a final newline."""
    root = tmp_path_factory.mktemp("dask-inputs")
    main = root / "requests-1.jsonl"
    main.write_bytes(b"\n".join(mixed_lines(4000)) + b"\n")
    second = root / "requests-2.jsonl"
    second.write_bytes(b"\n".join(mixed_lines(300, seed=5)))
    return {"main": main, "second": second, "root": root}


@pytest.fixture(scope="module")
def expected(inputs: dict[str, Path]) -> dict[str, subprocess.CompletedProcess[bytes]]:
    return {
        "main": plain(inputs["main"]),
        "both": plain(inputs["main"], inputs["second"]),
    }


# ---------------------------------------------------------------- an external cluster


class Cluster:
    """``dask scheduler`` + ``dask worker --nworkers 2``, both on 127.0.0.1, in their own
    process groups so that teardown ends them and everything they started.

    ``--host`` alone leaves each process's HTTP server (health, metrics; it runs even with
    ``--no-dashboard``) on every interface, the scheduler's on port 8787:
    ``--dashboard-address 127.0.0.1:0`` keeps it local, on a free port."""

    def __init__(self, root: Path) -> None:
        self.file = root / "scheduler.json"
        self.log = root / "cluster.log"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.client = None
        self.address = ""

    def start(self) -> None:
        log = self.log.open("ab")
        dask = str(BIN / "dask")
        common = {"stdout": log, "stderr": log, "start_new_session": True}
        self.procs.append(
            subprocess.Popen(
                [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(self.file)],
                **common,
            )
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (self.file.exists() and self.file.stat().st_size):
            assert time.monotonic() < deadline, self.log.read_text(errors="replace")[-3000:]
            assert self.procs[0].poll() is None, self.log.read_text(errors="replace")[-3000:]
            time.sleep(0.1)
        time.sleep(0.1)
        self.address = json.loads(self.file.read_text())["address"]
        assert self.address.startswith("tcp://127.0.0.1:")
        self.procs.append(
            subprocess.Popen(
                [dask, "worker", self.address, "--host", "127.0.0.1", "--nworkers", "2",
                 "--nthreads", "1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"],
                **common,
            )
        )  # fmt: skip
        from dask.distributed import Client

        self.client = Client(self.address, timeout=30, set_as_default=False)
        self.wait_for_workers()

    def wait_for_workers(self, count: int = 2) -> None:
        assert self.client is not None
        self.client.wait_for_workers(count, timeout=60)

    def worker_pids(self) -> dict[str, int]:
        assert self.client is not None
        return self.client.run(os.getpid)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close(timeout=10)
        for proc in reversed(self.procs):  # workers first, then the scheduler
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything left in its group


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("dask-cluster"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


# ---------------------------------------------------------------- partitions, no Dask


TRICKY = (
    b"\n"
    + b"\r\n".join(line for line in mixed_lines(40, seed=3))
    + b"\n\n"
    + json.dumps({"id": "long", "formula": "+".join(["a"] * 300), "vars": {"a": 1}}).encode()
    + b"\nnot json at the end"
)


def plain_answer(data: bytes, max_line: int) -> tuple[str, int, int]:
    """What plain ``gradcalc batch`` answers for ``data`` (its reader and its per-block work)."""
    blocks = batch._blocks(io.BytesIO(data), max_line)
    replies = [batch._work(block, first, None) for block, first in blocks]
    return (
        "".join(text for text, _, _ in replies),
        sum(count for _, count, _ in replies),
        sum(bad for _, _, bad in replies),
    )


@pytest.mark.parametrize("max_line", [MAX_LINE_BYTES, 60])
@pytest.mark.parametrize("data", [TRICKY, TRICKY + b"\n", b"x", b"\n", b"\n\n{}\n"])
def test_partitions_of_any_size_answer_each_line_once_with_its_number(
    tmp_path: Path, data: bytes, max_line: int
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    whole, answered, failed = plain_answer(data, max_line)
    if max_line == MAX_LINE_BYTES:
        assert (whole, answered, failed) == api.run_block(data, 1)
    elif len(data) > 100:
        assert "longer than 60 bytes" in whole
    sizes = sorted({1, 2, 3, 7, 64, 100, 1000, len(data) - 1, len(data), len(data) + 5} - {0})
    for size in sizes:
        parts = dist.plan([str(path)], size)
        assert [p.end - p.start for p in parts[:-1]] == [size] * (len(parts) - 1)
        # each partition counts its own lines before it (newlines_before is None)
        results = [dist.run_partition(p, max_line_bytes=max_line) for p in parts]
        assert b"".join(r.text for r in results).decode() == whole, size
        assert sum(r.lines for r in results) == answered
        assert sum(r.failed for r in results) == failed


def test_partition_results_file_is_replaced_when_recomputed(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(TRICKY)
    out = tmp_path / "out"
    out.mkdir()
    parts = dist.plan([str(path)], 500)
    for _ in range(2):  # a partition recomputed after its worker was lost
        for part in parts:
            result = dist.run_partition(part, str(out))
            assert result.text == b""
    names = sorted(os.listdir(out))
    assert names == [p.name for p in parts]  # one file each, nothing temporary left
    joined = b"".join((out / name).read_bytes() for name in names).decode()
    assert joined == api.run_block(TRICKY, 1)[0]


def test_plan_names_sort_in_input_order_and_paths_are_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, size in (("b.jsonl", 10), ("a.jsonl", 0), ("c", 25)):
        (tmp_path / name).write_bytes(b"x" * size)
    monkeypatch.chdir(tmp_path)
    parts = dist.plan(["b.jsonl", "a.jsonl", "c"], 4)
    assert [(Path(p.path).name, p.start, p.end) for p in parts][:4] == [
        ("b.jsonl", 0, 4),
        ("b.jsonl", 4, 8),
        ("b.jsonl", 8, 10),
        ("c", 0, 4),
    ]
    assert all(os.path.isabs(p.path) for p in parts)
    assert [p.name for p in parts] == sorted(p.name for p in parts)
    assert parts[0].name == "00000-b.jsonl" and parts[-1].name == "00009-c.jsonl"
    assert [p.last_in_file for p in parts] == [False, False, True] + [False] * 6 + [True]


def test_per_partition_functions_are_picklable() -> None:
    import pickle

    for function in (dist.run_partition, dist.count_newlines):
        assert pickle.loads(pickle.dumps(function)) is function
    part = dist.plan([__file__], 1 << 20)[0]
    assert pickle.loads(pickle.dumps(part)) == part


def test_partition_sizes_spread_small_inputs_and_cap_large_ones() -> None:
    assert dist.partition_bytes_for(100, 2) == dist.MIN_PARTITION_BYTES
    assert dist.partition_bytes_for(10 << 20, 2) == (10 << 20) // 8
    assert dist.partition_bytes_for(10 << 30, 2) == dist.DEFAULT_PARTITION_BYTES
    assert dist.partition_bytes_for(10 << 30, 2, largest=1 << 20) == 1 << 20


# ---------------------------------------------------------------- usage, without a cluster


def test_without_dask_installed_the_error_says_how_to_install_it(inputs: dict[str, Path]) -> None:
    code = (
        "import sys\n"
        "sys.modules['dask'] = None\n"  # as if it were not installed
        "from gradcalc.cli.main import run\n"
        f"sys.exit(run(['batch', {str(inputs['main'])!r}, '--dask', 'local']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "pip install 'gradcalc[dask]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_plain_batch_never_imports_dask(inputs: dict[str, Path]) -> None:
    code = (
        "import sys\n"
        "from gradcalc.cli.main import run\n"
        f"path = {str(inputs['second'])!r}\n"
        "run(['batch', path]); run(['batch', path, path, '--no-progress'])\n"
        "run(['batch', path, '--jobs', '2'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('dask', 'distributed', 'tornado', 'cloudpickle'))\n"
        "sys.stderr.write(f'LOADED {loaded}')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stderr.endswith("LOADED []"), done.stderr[-2000:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output-dir", "out"], "--output-dir needs --dask"),
        (["--partition-size", "1k"], "--partition-size needs --dask"),
        (["--dask", "nonsense"], "scheduler address"),
        (["--dask", "local", "--partition-size", "12Q"], "--partition-size expects"),
    ],
)
def test_usage_errors_exit_2(inputs: dict[str, Path], args: list[str], message: str) -> None:
    result = runner.invoke(app, ["batch", str(inputs["second"]), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stdout == ""


def test_dask_reads_files_not_standard_input_and_every_file_must_exist(
    inputs: dict[str, Path],
) -> None:
    result = runner.invoke(app, ["batch", "-", "--dask", "local"], input="{}\n")
    assert result.exit_code == 2 and "not '-'" in result.stderr
    missing = str(inputs["root"] / "missing.jsonl")
    result = runner.invoke(app, ["batch", str(inputs["main"]), missing, "--dask", "local"])
    assert result.exit_code == 2 and "cannot read" in result.stderr
    pattern = str(inputs["root"] / "nothing-*.jsonl")
    result = runner.invoke(app, ["batch", pattern, "--dask", "local"])
    assert result.exit_code == 2 and "no file matches" in result.stderr


def test_several_files_without_dask_run_one_after_another(
    inputs: dict[str, Path], expected: dict[str, subprocess.CompletedProcess[bytes]]
) -> None:
    done = gradcalc(str(inputs["main"]), str(inputs["second"]))
    assert done.returncode == 1
    assert done.stdout == expected["both"].stdout
    assert done.stderr == b""


# ---------------------------------------------------------------- a local cluster


def test_local_cluster_gives_byte_identical_output(
    inputs: dict[str, Path], expected: dict[str, subprocess.CompletedProcess[bytes]]
) -> None:
    want = expected["main"]
    assert want.returncode == 1 and want.stderr == b""
    assert len(want.stdout.splitlines()) > 3500
    done = gradcalc(str(inputs["main"]), "--dask", "local", "--jobs", "2")
    assert done.stderr == b""
    assert done.returncode == 1
    assert done.stdout == want.stdout


def test_local_cluster_listens_on_127_0_0_1_only() -> None:
    code = (
        "import json, psutil\n"
        "from gradcalc.distributed import connect\n"
        "if __name__ == '__main__':\n"
        "    with connect('local', 2) as client:\n"
        "        client.wait_for_workers(2, timeout=60)\n"
        "        me = psutil.Process()\n"
        "        procs = [me, *me.children(recursive=True)]\n"
        "        found = [c.laddr.ip for p in procs for c in p.net_connections('inet')\n"
        "                 if c.status == psutil.CONN_LISTEN]\n"
        "        print(json.dumps(found))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout)
    assert len(found) >= 3  # the scheduler, two workers (and their nannies)
    assert set(found) == {"127.0.0.1"}


def test_forced_progress_goes_to_stderr_and_leaves_stdout_alone(
    inputs: dict[str, Path], expected: dict[str, subprocess.CompletedProcess[bytes]]
) -> None:
    done = gradcalc(str(inputs["second"]), "--dask", "local", "--progress")
    want = plain(inputs["second"])
    assert done.stdout == want.stdout
    assert b"partitions" in done.stderr and b"lines" in done.stderr


# ---------------------------------------------------------------- an external cluster


def test_external_cluster_listens_on_127_0_0_1_only(cluster: Cluster) -> None:
    import psutil

    found = set()
    for proc in cluster.procs:
        parent = psutil.Process(proc.pid)
        for each in (parent, *parent.children(recursive=True)):
            for conn in each.net_connections("inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add(conn.laddr.ip)
    assert found == {"127.0.0.1"}


def test_external_cluster_gives_byte_identical_output_file_by_file(
    cluster: Cluster,
    inputs: dict[str, Path],
    expected: dict[str, subprocess.CompletedProcess[bytes]],
) -> None:
    cluster.wait_for_workers()
    pattern = str(inputs["root"] / "requests-*.jsonl")  # a glob, expanded in sorted order
    done = gradcalc(pattern, "--dask", cluster.address, "--partition-size", "16KiB")
    assert done.stderr == b""
    assert done.returncode == 1
    assert done.stdout == expected["both"].stdout


def test_output_dir_files_concatenated_equal_plain_output(
    cluster: Cluster,
    inputs: dict[str, Path],
    expected: dict[str, subprocess.CompletedProcess[bytes]],
    tmp_path: Path,
) -> None:
    cluster.wait_for_workers()
    out = tmp_path / "results"
    files = [str(inputs["main"]), str(inputs["second"])]
    args = [*files, "--dask", cluster.address, "--output-dir", str(out)]
    done = gradcalc(*args, "--partition-size", "32KiB")
    assert (done.returncode, done.stdout, done.stderr) == (1, b"", b"")
    names = sorted(os.listdir(out))
    assert names == [p.name for p in dist.plan(files, 32 << 10)]
    joined = b"".join((out / name).read_bytes() for name in names)
    assert joined == expected["both"].stdout
    again = gradcalc(*args)
    assert again.returncode == 2 and b"not empty" in again.stderr


def test_a_worker_killed_mid_run_still_yields_complete_output(
    cluster: Cluster, inputs: dict[str, Path], tmp_path: Path
) -> None:
    """Slow lines spread over small partitions; one worker is killed (SIGKILL) once the first
    results are out. Its nanny starts a new one and Dask recomputes what was lost."""
    cluster.wait_for_workers()
    slow = json.dumps(
        {"id": "slow", "formula": "s = 0\nfor i in range(3000): s = s + i*a\ns", "vars": {"a": 1}}
    ).encode()
    lines = mixed_lines(4000, seed=11)
    for i in range(0, len(lines), 50):
        lines[i] = slow
    path = tmp_path / "slow.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    want = plain(path)
    before = cluster.worker_pids()
    command = [*GRADCALC, "batch", str(path), "--dask", cluster.address]
    with subprocess.Popen(
        [*command, "--partition-size", "8KiB"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            first = proc.stdout.readline()
            victim = next(iter(before.values()))
            os.kill(victim, signal.SIGKILL)
            rest = proc.stdout.read()
            stderr = proc.stderr.read()
            assert proc.wait(timeout=TIMEOUT) == 1, stderr[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert first + rest == want.stdout
    assert stderr == b""
    cluster.wait_for_workers()
    assert victim not in cluster.worker_pids().values()


def test_a_partition_its_workers_cannot_read_fails_the_run_with_a_hint(
    cluster: Cluster, tmp_path: Path
) -> None:
    path = tmp_path / "gone.jsonl"
    path.write_bytes(b"\n".join(mixed_lines(50)) + b"\n")
    parts = dist.plan([str(path)], 1 << 20)
    path.unlink()
    with pytest.raises(dist.PartitionFailed, match="at the same path") as failed:
        list(dist.run(cluster.client, parts))
    assert isinstance(failed.value.cause, FileNotFoundError)


def test_sigterm_ends_a_local_cluster_busy_with_runaway_requests(tmp_path: Path) -> None:
    import psutil

    runaway = json.dumps({"id": "loop", "formula": "x = 0\nwhile True: x = 1"})
    path = tmp_path / "runaway.jsonl"
    path.write_text("\n".join([runaway] * 4) + "\n")
    args = [str(path), "--dask", "local", "--jobs", "2", "--partition-size", "100"]
    with subprocess.Popen(
        [*GRADCALC, "batch", *args, "--max-iterations", "1000000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        parent = psutil.Process(proc.pid)
        children: list[psutil.Process] = []
        alive: list[psutil.Process] = []
        try:
            deadline = time.monotonic() + 60
            busy: list[psutil.Process] = []
            while len(busy) < 2:  # both workers spinning in a request
                assert time.monotonic() < deadline, "the workers never got busy"
                time.sleep(0.3)
                children = parent.children(recursive=True)
                busy = [c for c in children if c.cpu_times().user > 1.2]
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 143
            elapsed = time.monotonic() - started
            _, alive = psutil.wait_procs(children, timeout=5)
        finally:
            for each in [parent, *children]:
                with contextlib.suppress(psutil.Error):
                    each.kill()
        assert alive == []
        assert elapsed < 3
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        assert stderr == b"", stderr.decode(errors="replace")[-3000:]
