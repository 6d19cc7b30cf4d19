"""``gradcalc.nn.functional``: the few functional-style PyTorch names tutorials use.

The losses and ``linear`` are declared here, once, in the registry's style
(``@deffunction``, see :mod:`gradcalc.ops`), so they are formula built-ins too.
"""

from __future__ import annotations

from typing import Any

from gradcalc import _functions as F
from gradcalc._tensor import Tensor
from gradcalc.ops import deffunction

_NN = {"namespace": "nn.functional", "method": False}


@deffunction("mean (or sum) of the squared differences (x - target)**2", **_NN)
def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    diff = input - target
    return _reduce(diff * diff, reduction)


@deffunction("mean (or sum) of the absolute differences |x - target|", **_NN)
def l1_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    return _reduce(F.abs(input - target), reduction)


@deffunction("x @ weight.T + bias, a fully connected layer", **_NN)
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    out = F.matmul(input, F.t(weight) if weight.ndim == 2 else weight)
    return out if bias is None else out + bias


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return F.mean(values)
    if reduction == "sum":
        return F.sum(values)
    if reduction == "none":
        return values
    raise ValueError(f"{reduction} is not a valid value for reduction")


relu = F.relu
sigmoid = F.sigmoid
tanh = F.tanh
softplus = F.softplus
softmax = F.softmax
log_softmax = F.log_softmax
