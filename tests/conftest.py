"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gradcalc import _tensor


@pytest.fixture(params=["native", "python"])
def backward_loops(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Run a test with backward's per-node loops in C and again in Python (see _native.c)."""
    if request.param == "native":
        if _tensor._native is None:
            pytest.skip("gradcalc._native was not built (no C compiler at install)")
    else:
        monkeypatch.setattr(_tensor, "_native", None)
    yield request.param
