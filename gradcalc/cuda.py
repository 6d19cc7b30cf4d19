"""``torch.cuda`` as far as CPU-only code asks it: there is no GPU.

Tutorials choose their device with ``"cuda" if torch.cuda.is_available() else
"cpu"``; these answers make them choose the CPU, the one device gradcalc has.
"""

from __future__ import annotations


def is_available() -> bool:
    """False: gradcalc computes on the CPU only."""
    return False


def device_count() -> int:
    """0: no GPU is ever visible to gradcalc."""
    return 0


def manual_seed(seed: int) -> None:
    """Accepted and ignored, as PyTorch does without a GPU (no CUDA generator to seed)."""


def manual_seed_all(seed: int) -> None:
    """Accepted and ignored, as PyTorch does without a GPU."""
