"""Rich text rendering of results and errors built by hand (no formula needed)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from gradcalc.api import Result
from gradcalc.cli.render import error_text, make_console, print_result
from gradcalc.errors import ParseError


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def render(result: Result, stream: io.StringIO | None = None, **kwargs) -> str:
    stream = stream or io.StringIO()
    console = make_console(stream)
    print_result(result, console, command=kwargs.pop("command", "grad"), **kwargs)
    return stream.getvalue()


SEED = Result(
    value=np.array(-12.0),
    dtype="float64",
    gradients={"a": np.array(36.0), "b": np.array(-12.0)},
    output_name="P",
)


def test_scalar_result_shows_value_and_gradient_table() -> None:
    text = render(SEED, with_check=False)
    assert text.splitlines()[0] == "P = -12.0"
    assert "gradients of P" in text
    rows = [line.split() for line in text.splitlines()]
    assert ["a", "()", "36.0"] in rows
    assert ["b", "()", "-12.0"] in rows
    assert "\x1b" not in text


def test_vector_result_says_it_was_summed_and_flags_unused() -> None:
    result = Result(
        value=np.array([-12.0, 65.0]),
        dtype="float64",
        gradients={"a": np.array([36.0, 81.0]), "c": np.array(0.0)},
        unused=["c"],
        summed=True,
        notes=["The output has shape (2,); it was differentiated as its sum."],
    )
    text = render(result, with_check=False)
    assert "[-12.  65.]" in text  # NumPy's layout
    assert "(as a sum)" in text
    assert "c (unused)" in text
    assert "note: The output has shape (2,)" in text


def test_large_tensors_are_summarised_and_matrices_keep_rows() -> None:
    result = Result(
        value=np.arange(5000.0),
        dtype="float64",
        gradients={"w": np.arange(6.0).reshape(2, 3)},
    )
    text = render(result, with_check=False)
    assert "..." in text
    assert len(text.splitlines()) < 30
    assert "[[0. 1. 2.]" in text and "[3. 4. 5.]]" in text


def test_check_column_marks_agreement_and_mismatch() -> None:
    result = Result(
        value=np.array(1.0),
        dtype="float64",
        gradients={"a": np.array(1.0), "b": np.array(2.0), "r": np.array(3.0)},
        check={"a": 1e-12, "b": 0.5, "r": None},
    )
    text = render(result, with_check=True)
    assert "1.0e-12 ok" in text
    assert "5.0e-01 MISMATCH" in text
    assert "not checked" in text


def test_eval_prints_only_the_value() -> None:
    text = render(SEED, command="eval", with_check=False)
    assert text == "P = -12.0\n"


def test_float32_values_print_as_float32() -> None:
    result = Result(value=np.array(0.1, dtype=np.float32), dtype="float32")
    assert render(result, command="eval", with_check=False) == "value = 0.1  (float32)\n"


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    error = ParseError("expected an operand after '*'", line=1, column=4, source="a +* b")
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = FakeTerminal()
    make_console(terminal).print(error_text(error))
    assert "\x1b[" in terminal.getvalue()
    plain = io.StringIO()
    make_console(plain).print(error_text(error))
    assert "\x1b" not in plain.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    terminal = FakeTerminal()
    make_console(terminal).print(error_text(error))
    make_console(terminal).print("[bold]x[/bold]")
    assert "\x1b" not in terminal.getvalue()
    assert "[bold]x[/bold]" in terminal.getvalue()  # user text is never markup


def test_error_shows_source_line_caret_and_hint() -> None:
    error = ParseError(
        "expected an operand after '*'", line=1, column=4, source="a +* b", hint="remove one"
    )
    stream = io.StringIO()
    make_console(stream).print(error_text(error))
    assert stream.getvalue().splitlines() == [
        "ParseError: expected an operand after '*' (line 1, column 4)",
        "  a +* b",
        "     ^",
        "hint: remove one",
    ]


def test_error_in_a_long_line_is_windowed_around_the_column() -> None:
    source = "a+" * 5000 + "(" + "b" * 5000
    error = ParseError("unclosed '('", line=1, column=10001, source=source)
    stream = io.StringIO()
    make_console(stream).print(error_text(error, 80))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert all(len(line) <= 80 for line in lines)
    caret = lines[2].index("^")
    assert lines[1][caret] == "("
