"""The plain writer (cli/plain.py) writes what Rich writes, byte for byte, or declines.

Each case runs twice in-process, once as shipped and once with the plain writer
switched off (so Rich draws), and the exit code, stdout and stderr must agree;
the cases marked plain must also have been written without Rich, the others
must have been declined.
"""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from gradcalc.api import Result
from gradcalc.cli import plain
from gradcalc.cli.main import run
from gradcalc.errors import FormulaError, ParseError

RICH_ENV = ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "TERM")


@pytest.fixture(autouse=True)
def quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in RICH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "80")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_cli(
    monkeypatch: pytest.MonkeyPatch, args: list[str], *, rich: bool
) -> tuple[tuple[int, str, str], list[bool]]:
    """(exit code, stdout, stderr), and what each plain write answered (True: written)."""
    out, err = io.StringIO(), io.StringIO()
    answers: list[bool] = []
    real = plain._write

    def recorded(stream: Any, lay: Any) -> bool:
        answers.append(real(stream, lay))
        return answers[-1]

    with monkeypatch.context() as patch:
        patch.setattr(sys, "stdout", out)
        patch.setattr(sys, "stderr", err)
        patch.setattr(plain, "_write", recorded)
        if rich:
            patch.setattr(plain, "console_shape", lambda stream: None)
        code = run(args)
    return (code, out.getvalue(), err.getvalue()), answers


def check_same(monkeypatch: pytest.MonkeyPatch, args: list[str], *, written: bool) -> str:
    shown, answers = run_cli(monkeypatch, args, rich=False)
    drawn, _ = run_cli(monkeypatch, args, rich=True)
    assert shown == drawn
    assert answers == [written], f"plain writer answered {answers}"
    return shown[1] + shown[2]


LONG = "a_rather_long_variable_name_for_the_table"
CHAIN = "exp(exp(exp(exp(exp(exp(a))))))"
DEEP = "".join(f"{fn}(" for fn in ["sin", "cos"] * 8) + "a" + ")" * 16
WIDE = " + ".join(f"a*{i}" for i in range(150))
CORPUS = {
    "scalar": ["3*a**3 - b**2", "a=2", "b=6"],
    "unused": ["a*b", "a=1", "b=2", "c=3", "v=[1,2]"],
    "check pass": ["a*b", "a=1", "b=2", "--check"],
    "check mismatch": ["a*b", "a=1", "b=2", "--check", "--check-tolerance", "0"],
    "notes, non-finite": ["a/0", "a=-1", "b=0.5"],
    "nan": ["a**b", "a=-1", "b=0.5"],
    "eval": ["eval", "log(a)", "a=0"],
    "eval finite": ["eval", "3*a", "a=2"],
    "no variables": ["1 + 2"],
    "float32": ["a*3", "a=0.1", "--dtype", "float32"],
    "long name": [f"{LONG} * b", f"{LONG}=2", "b=3"],
    "vector": ["a*[1,2,3]", "a=2"],
    "summed vector": ["x*x", "x=[1,2,3]"],
    "long vector": ["sum(x*x)", "x=[" + ",".join(map(str, range(60))) + "]"],
    "matrix blocks": ["sum(w*x)", "w=[[1,2,3],[4,5,6]]", "x=[[1,1,1],[2,2,2]]"],
    "jacobian": ["jacobian", "a*[1,2]", "a=2"],
    "hessian blocks": ["hessian", "sum(w*w)", "w=[1,2]"],
    "grad --graph": ["x*x + log(z)", "x=2", "z=3", "--graph"],
    "parse error": ["3*a +"],
    "parse error, column": ["a +* b", "a=1", "b=2"],
    "parse error, trailing space": ["log(a) + ", "a=1"],
    "parse error, unmatched": ["sin(a))", "a=1"],
    "unknown character": ["3 $ 4"],
    "long line, windowed caret": [WIDE[:300] + " +* 1", "a=1"],
    "name error": ["a + q", "a=1"],
    "unknown function": ["foo(a)", "a=1"],
    "runtime error": ["[1,2] + [1,2,3]"],
    "index error": ["x[5]", "x=[1,2]"],
    "functions": ["functions"],
    "graph": ["graph", "x*x + log(z)", "x=2", "z=3"],
    "graph, chain": ["graph", CHAIN, "a=0.1"],
    "graph, deep": ["graph", DEEP, "a=0.5"],
    "graph, wide": ["graph", WIDE, "a=1"],
    "graph, long name": ["graph", f"{LONG} * {LONG} + 1", f"{LONG}=[1,2,3]"],
    "graph, constant": ["graph", "2 + 3"],
}


@pytest.mark.parametrize("columns", ["40", "80", "200"])
@pytest.mark.parametrize("case", list(CORPUS), ids=list(CORPUS))
def test_plain_text_is_rich_text(monkeypatch: pytest.MonkeyPatch, case: str, columns: str) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    args = CORPUS[case]
    shown, answers = run_cli(monkeypatch, args, rich=False)
    drawn, _ = run_cli(monkeypatch, args, rich=True)
    assert shown == drawn
    assert len(answers) == 1
    if columns != "40" or case not in NARROW_FALLBACK:
        assert answers == [True], "the plain writer declined"


NARROW_FALLBACK = {"check pass", "check mismatch", "functions", "long name"}
NARROW_FALLBACK |= {"graph, wide", "graph, deep", "graph, long name"}
"""At 40 columns these tables are wider than the console (Rich shrinks them) and these
trees' guides leave too little room for some words of their labels: Rich."""


def test_the_corpus_says_what_it_should(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "36.0" in check_same(monkeypatch, CORPUS["scalar"], written=True)
    assert "MISMATCH" in check_same(monkeypatch, CORPUS["check mismatch"], written=True)
    assert "v (unused)" in check_same(monkeypatch, CORPUS["unused"], written=True)
    text = check_same(monkeypatch, CORPUS["parse error"], written=True)
    assert "^" in text and "hint: " in text
    assert "… 3 more ExpBackward0 in a chain" in check_same(
        monkeypatch, CORPUS["graph, chain"], written=True
    )
    assert "and its" in check_same(monkeypatch, CORPUS["graph, deep"], written=True)
    assert "nodes drawn; --format json" in check_same(
        monkeypatch, CORPUS["graph, wide"], written=True
    )
    assert "(shown above)" in check_same(monkeypatch, CORPUS["graph"], written=True)
    assert "…" in check_same(monkeypatch, CORPUS["long line, windowed caret"], written=True)


@pytest.mark.parametrize("columns", ["20", "33", "57", "100", "120"])
def test_odd_widths_wrap_as_rich_does(monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    for args in (CORPUS["graph, long name"], CORPUS["notes, non-finite"], CORPUS["functions"]):
        shown, _ = run_cli(monkeypatch, args, rich=False)
        drawn, _ = run_cli(monkeypatch, args, rich=True)
        assert shown == drawn


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["functions"], {"COLUMNS": "50"}),  # a word wider than the description: Rich crops it
        (["a*b", "a=1", "b=2", "--check"], {"COLUMNS": "40"}),  # a table wider than the console
        (["a + \x1b]0;evil\x07 b", "a=1", "b=2"], {}),  # ␛ and ␇: widths Rich measures itself
        (["3*a**3 - b**2", "a=2", "b=6"], {"COLUMNS": "12"}),  # narrower than MIN_WIDTH
        (["3*a**3 - b**2", "a=2", "b=6"], {"FORCE_COLOR": "1"}),  # Rich takes it for a terminal
        (["3*a +"], {"TTY_COMPATIBLE": "1"}),
        (["functions"], {"FORCE_COLOR": ""}),
    ],
)
def test_unusual_cases_are_left_to_rich(
    monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    check_same(monkeypatch, args, written=False)


# ---------------------------------------------------------------- results built by hand


def render_both(
    result: Result, command: str = "grad", stream_type: type = io.StringIO, with_check: bool = False
) -> str:
    from gradcalc.cli.render import make_console, print_result

    plain_stream, rich_stream = stream_type(), stream_type()
    assert plain.write_result(result, plain_stream, command=command, with_check=with_check)
    print_result(result, make_console(rich_stream), command=command, with_check=with_check)
    assert plain_stream.getvalue() == rich_stream.getvalue()
    return plain_stream.getvalue()


def hessian_result() -> Result:
    return Result(
        value=np.array(1.0),
        dtype="float64",
        gradients={"a": np.array(1.0), "bb": np.array(2.0)},
        hessian={
            "a": {"a": np.array(0.0), "bb": np.array(6.0)},
            "bb": {"a": np.array(6.0), "bb": np.array(-1234.5)},
        },
        output_name="P",
    )


HAND = {
    "hessian table": hessian_result(),
    "check, float32, notes": Result(
        value=np.array(1.0, dtype=np.float32),
        dtype="float32",
        gradients={"a": np.array(1.0), "b": np.array(2.0), "r": np.array(3.0)},
        check={"a": 1e-12, "b": 0.5, "r": None},
        unused=["r"],
        notes=["a note that is long enough to wrap at forty columns, surely, yes"],
    ),
    "summarised": Result(
        value=np.arange(5000.0), dtype="float64", gradients={"w": np.arange(6.0).reshape(2, 3)}
    ),
    "3-d blocks, blank lines": Result(
        value=np.zeros((2, 2, 2)),
        dtype="float64",
        gradients={"t": np.arange(8.0).reshape(2, 2, 2)},
        check={"t": 2.0},
        unused=["t"],
    ),
    "multi-line table cells": Result(  # at 80 columns: the name leaves 39 for the gradient
        value=np.array(0.0),
        dtype="float64",
        gradients={"n" * 37: np.arange(3.0) / 7},
    ),
}


@pytest.mark.parametrize("columns", ["40", "80", "200"])
@pytest.mark.parametrize("case", list(HAND), ids=list(HAND))
def test_results_built_by_hand(monkeypatch: pytest.MonkeyPatch, case: str, columns: str) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    text = render_both(HAND[case], command="hessian")
    if case == "multi-line table cells" and columns == "80":
        *_, first, second = text.splitlines()  # the gradient's two lines, in one row
        assert second.strip() == "0.28571429]"
        assert second.index("0.28") == first.index("[0.") + 1
    if columns == "200" or (columns == "80" and case != "multi-line table cells"):
        render_both(HAND[case], command="hessian", with_check=True)  # the check column too


def test_the_hessian_table_is_right_justified() -> None:
    text = render_both(hessian_result(), command="hessian")
    assert "\n d²P    da       dbb \n─────────────────────\n" in text
    assert "\n da    0.0       6.0 \n dbb   6.0   -1234.5 \n" in text


def test_no_color_on_a_terminal_wraps_like_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR on a terminal: Rich wraps an error there (soft wrap only off a terminal)."""
    from gradcalc.cli.render import error_text, make_console

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "40")
    render_both(HAND["check, float32, notes"], stream_type=FakeTerminal)
    source = "alpha + beta * gamma +* delta - epsilon / zeta"
    hint = "write a number, a name or a bracketed expression there, then try again"
    message = "expected an operand after '+', but found '*'"
    error = ParseError(message, hint=hint, line=1, column=23, source=source)
    for stream_type in (FakeTerminal, io.StringIO):
        mine, theirs = stream_type(), stream_type()
        assert plain.write_error(error, mine)
        console = make_console(theirs)
        console.print(error_text(error, console.width), soft_wrap=not console.is_terminal)
        assert mine.getvalue() == theirs.getvalue()


def test_errors_of_other_kinds() -> None:
    from gradcalc.cli.render import error_text, make_console

    errors = (
        ValueError("plain words"),
        FormulaError("no place"),
        ParseError("x", line=2, column=1, source="a\nb"),
        ParseError("y", line=1, source="ab"),
    )
    for error in errors:
        mine, theirs = io.StringIO(), io.StringIO()
        assert plain.write_error(error, mine)
        make_console(theirs).print(error_text(error, 80), soft_wrap=True)
        assert mine.getvalue() == theirs.getvalue()


# ---------------------------------------------------------------- the pieces


def test_safe_characters_are_one_cell_and_not_whitespace() -> None:
    from rich.cells import cell_len

    for char in plain._SAFE:
        assert cell_len(char) == 1, repr(char)
        assert char == " " or not char.isspace(), repr(char)
        assert len(char.splitlines()) == 1


def test_wrapping_follows_rich_on_random_text() -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(file=io.StringIO(), width=80)
    rng = random.Random(12)
    written = 0
    for _ in range(400):
        words = ["x" * rng.choice([1, 2, 3, 5, 8, 13]) for _ in range(rng.randint(0, 12))]
        text = "".join(word + " " * rng.choice([0, 1, 1, 1, 2, 5]) for word in words)
        text = " " * rng.choice([0, 0, 2]) + text
        width = rng.randint(1, 30)
        try:
            mine = plain._wrap(text, width)
        except plain.Unfit:  # a word wider than the line: Rich's to fold or crop
            assert max(len(word.rstrip()) for word in re.findall(r"\s*\S+\s*", text)) > width
            continue
        folded = Text(text).wrap(console, width)
        assert mine == [line.plain for line in folded], (text, width)
        cells = Text(text).wrap(console, width, justify="left", overflow="ellipsis")
        assert [line.ljust(width) for line in mine] == [line.plain for line in cells]
        written += 1
    assert written > 200


def test_console_shape_matches_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    from gradcalc.cli.render import make_console

    monkeypatch.delenv("COLUMNS")
    stream = io.StringIO()
    assert plain.console_shape(stream) == (make_console(stream).width, False)
    monkeypatch.setenv("COLUMNS", "123")
    assert plain.console_shape(stream) == (123, False)
    assert plain.console_shape(FakeTerminal()) is None  # colour: Rich
    monkeypatch.setenv("NO_COLOR", "1")
    assert plain.console_shape(FakeTerminal()) == (123, True)
    monkeypatch.setenv("TERM", "dumb")
    assert plain.console_shape(FakeTerminal()) is None
    ascii_stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    assert plain.console_shape(ascii_stream) is None  # Rich would draw ASCII guides


# ---------------------------------------------------------------- Rich stays unloaded


def test_text_commands_do_not_import_rich() -> None:
    """Piped, a scalar result, an error and the functions listing load no Rich at all."""
    env = {k: v for k, v in os.environ.items() if k not in RICH_ENV and k != "COLUMNS"}
    for args in (["3*a**3 - b**2", "a=2", "b=6"], ["3*a +"], ["functions"]):
        script = (
            "import sys\n"
            "from gradcalc.cli.main import run\n"
            f"code = run({args!r})\n"
            "sys.stdout.write(f'\\nexit {code} rich {\"rich\" in sys.modules}\\n')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
        )
        assert done.stdout.splitlines()[-1] == f"exit {1 if args == ['3*a +'] else 0} rich False"
        assert ("ParseError" in done.stderr) == (args == ["3*a +"])
