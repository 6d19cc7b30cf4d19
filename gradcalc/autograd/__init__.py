"""``gradcalc.autograd``: ``grad``, ``backward``, ``Function``, ``gradcheck`` and the
legacy ``Variable``.

``grad`` differentiates with respect to leaves *or* intermediate tensors
and never touches ``.grad``; ``functional`` has ``jacobian``, ``hessian``,
``vjp``, ``jvp``, ``vhp`` and ``hvp``; ``Function`` is a user-written derivative.
"""

from __future__ import annotations

from typing import Any

from gradcalc._tensor import Tensor, backward, grad, leaf, make_tensor
from gradcalc._tensor import enable_grad as enable_grad
from gradcalc._tensor import no_grad as no_grad
from gradcalc._tensor import set_grad_enabled as set_grad_enabled
from gradcalc.autograd import functional
from gradcalc.autograd.checks import GradcheckError as GradcheckError
from gradcalc.autograd.checks import gradcheck as gradcheck
from gradcalc.autograd.checks import gradgradcheck as gradgradcheck
from gradcalc.autograd.function import Function as Function
from gradcalc.autograd.function import FunctionCtx as FunctionCtx

__all__ = [
    "Function",
    "GradcheckError",
    "Variable",
    "backward",
    "functional",
    "grad",
    "gradcheck",
    "gradgradcheck",
]


def Variable(data: Any, requires_grad: bool = False, volatile: bool = False) -> Tensor:
    """PyTorch 0.x's wrapper: today just a tensor sharing ``data``'s memory."""
    if isinstance(data, Tensor):
        if data._grad_fn is not None:
            return data
        tensor = leaf(data.data._data, requires_grad=False)
        return tensor.requires_grad_(requires_grad) if requires_grad else tensor
    return make_tensor(data, requires_grad=requires_grad)
