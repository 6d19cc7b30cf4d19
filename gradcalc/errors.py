"""The errors gradcalc raises, in two families.

``FormulaError`` and its subclasses are problems with a formula or its values.
Each carries the contract's error ``kind`` (``ParseError``, ``NameError``,
``ShapeError``, ``ValueError``, ``LimitError``, ``TypeError``), a message a
person understands, an optional hint, and where known the 1-based line and
column in the source, so every front end (CLI text, JSON, REPL) reports them
the same way.

``GradError`` and its subclasses are the autograd misuse PyTorch reports as
``RuntimeError`` (backward of a tensor that needs no grad, implicit gradient
of a non-scalar, a second backward through a freed graph, ...). They subclass
``RuntimeError`` so code written for PyTorch catches them unchanged.
"""

from __future__ import annotations

_CONTROL_PICTURES = {code: 0x2400 + code for code in range(32) if chr(code) not in "\t\n"}
_CONTROL_PICTURES[0x7F] = 0x2421
_CONTROL_PICTURES.update({code: 0xFFFD for code in range(0x80, 0xA0)})


def printable(text: str) -> str:
    """``text`` with control characters shown as their Unicode pictures (ESC as ␛), one
    character each so a caret stays under its column: echoed source must not drive the
    terminal (``ESC]0;...`` retitles it, ``ESC[2J`` clears it)."""
    return text.translate(_CONTROL_PICTURES)


class FormulaError(Exception):
    """A problem with a formula or its values; ``kind`` is the contract's error type."""

    kind = "ValueError"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        line: int | None = None,
        column: int | None = None,
        source: str | None = None,
    ) -> None:
        message = printable(message)
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.line = line
        self.column = column
        self.source = source

    def at(self, line: int | None, column: int | None, source: str | None = None) -> FormulaError:
        """Fill in the position if it is not known yet; return self for ``raise e.at(...)``."""
        if self.line is None and line:
            self.line, self.column = line, column
        if self.source is None and source is not None:
            self.source = source
        return self

    def source_line(self) -> str | None:
        """The offending line of the source, if both are known."""
        if self.source is None or self.line is None:
            return None
        lines = self.source.splitlines()
        return printable(lines[self.line - 1]) if 0 < self.line <= len(lines) else None

    def caret(self) -> str | None:
        """The source line with a caret under the column, for text output."""
        text = self.source_line()
        if text is None or self.column is None:
            return None
        return f"{text}\n{' ' * max(self.column - 1, 0)}^"

    def to_json(self) -> dict:
        """The contract's ``{"type", "message", "line", "column"}`` object (plus ``hint``)."""
        out: dict = {"type": self.kind, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        if self.column is not None:
            out["column"] = self.column
        if self.hint:
            out["hint"] = self.hint
        return out

    def __str__(self) -> str:
        where = f" (line {self.line}, column {self.column})" if self.line is not None else ""
        hint = f"\nhint: {self.hint}" if self.hint else ""
        return f"{self.kind}: {self.message}{where}{hint}"


class ParseError(FormulaError):
    kind = "ParseError"


class UnknownNameError(FormulaError):
    kind = "NameError"


class ShapeError(FormulaError):
    kind = "ShapeError"


class FormulaValueError(FormulaError):
    kind = "ValueError"


class LimitError(FormulaError):
    kind = "LimitError"


class FormulaTypeError(FormulaError):
    kind = "TypeError"


class GradError(RuntimeError):
    """Autograd misuse, reported with PyTorch's messages."""


class NoGradFnError(GradError):
    """backward() of a tensor that does not require grad."""


class ImplicitGradError(GradError):
    """backward() of a non-scalar without ``gradient``."""


class FreedGraphError(GradError):
    """A second backward through a graph whose saved tensors were freed."""


class InplaceLeafError(GradError):
    """An in-place change of a leaf that requires grad, outside ``no_grad``."""


class DtypeGradError(GradError):
    """requires_grad on a tensor whose dtype cannot carry gradients."""
