"""Resource limits for running a formula, each raised as a ``LimitError`` when crossed.

Length is never limited (a 1 MB formula runs); what a formula can make the
machine do is: loop iterations, call depth, bracket nesting, tensor size and
graph size. The CLI exposes each as an option so a user can raise it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    max_iterations: int = 10_000_000
    """Total loop iterations (``while`` and ``for``) in one run."""
    max_call_depth: int = 200
    """Nested user-function calls (recursion depth)."""
    max_nesting: int = 500
    """Bracket / expression nesting depth of the source; 200 must always work."""
    max_elements: int = 100_000_000
    """Elements of any one tensor, checked before allocating; in programs also the
    characters of a string and the items of a list (and a hundredth of it the bits of
    an int), checked before they are made."""
    max_graph_nodes: int = 50_000_000
    """Operations recorded in one run."""


DEFAULT_LIMITS = Limits()
