"""Echoed source in error reports cannot drive the user's terminal."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from gradcalc.cli.app import app
from gradcalc.errors import FormulaError, printable

runner = CliRunner()


def test_control_characters_become_visible_one_column_each() -> None:
    assert printable("a\x1b[31mb\x07c\x7f\r") == "a␛[31mb␇c␡␍"
    assert printable("tab\tand\nnewline") == "tab\tand\nnewline"
    error = FormulaError("bad '\x1b'", line=1, column=5, source="a + \x1b]0;title\x07 b")
    assert error.caret() == "a + ␛]0;title␇ b\n    ^"
    assert "\x1b" not in str(error)


def test_cli_error_report_echoes_no_escape_sequence() -> None:
    shown = runner.invoke(app, ["a + \x1b]0;evil\x07 b", "a=1", "b=2"])
    assert shown.exit_code == 1
    assert "\x1b" not in shown.output and "\x07" not in shown.output
    assert "␛]0;evil␇" in shown.output
    as_json = runner.invoke(app, ["a + \x1b[2J b", "a=1", "b=2", "--json"])
    assert json.loads(as_json.stdout)["error"]["column"] == 5
