"""``gradcalc.nn``: only ``functional``, the part of ``torch.nn`` autograd tutorials use."""

from gradcalc.nn import functional

__all__ = ["functional"]
