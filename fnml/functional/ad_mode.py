"""The automatic-differentiation mode switches fnml's steps turn on while tracing an op.

PyTorch equivalent: none (torch's autograd has no such modes: its kernels carry their own backward formulas
and write parameters in place).

Two context managers, read by the ops at trace time: :func:`reverse_mode_only` (the training step) lets ops
use hand-written reverse-mode gradients; :func:`dropping_param_writes` (the evaluation step) makes ops that
would write a parameter in place raise instead. ``fnml._step`` turns them on; the ops ask
:func:`reverse_mode_only_active` / :func:`param_writes_dropped`.
"""

from __future__ import annotations

import contextlib
import contextvars

__all__ = ["dropping_param_writes", "reverse_mode_only"]


_PARAM_WRITES_DROPPED = contextvars.ContextVar("fnml_param_writes_dropped", default=False)


@contextlib.contextmanager
def dropping_param_writes():
    """While active, ops that write into an ``nnx.Param`` in place (``embedding``'s ``max_norm``) raise.

    PyTorch equivalent: none (torch writes parameters in place even in eval mode).

    fnml's evaluation step (``train.make_eval_step``, ``fit``'s validation) traces the forward pass and returns
    no parameters, so such a write would be lost there while torch keeps it: refused loudly instead.
    """
    token = _PARAM_WRITES_DROPPED.set(True)
    try:
        yield
    finally:
        _PARAM_WRITES_DROPPED.reset(token)


def param_writes_dropped() -> bool:
    """Whether a :func:`dropping_param_writes` block is active (read by the ops at trace time)."""
    return _PARAM_WRITES_DROPPED.get()


_REVERSE_MODE_ONLY = contextvars.ContextVar("fnml_reverse_mode_only", default=False)


@contextlib.contextmanager
def reverse_mode_only():
    """While active (at trace time), ops may use hand-written reverse-mode gradients (``jax.custom_vjp``).

    PyTorch equivalent: none (torch's kernels carry their own backward formulas).

    fnml's training step differentiates only in reverse mode (``jax.value_and_grad``), so it turns this on:
    BatchNorm's training-mode forward then carries its closed-form backward (one pass over the activations
    and two per-channel sums). Outside it, the ops stay differentiable in every mode (``jax.jvp``,
    ``jax.hessian``): forward-mode AD cannot go through a ``custom_vjp`` function. Same values either way.

    >>> import jax, jax.numpy as jnp
    >>> from fnml import functional as F
    >>> f = lambda x: F.batch_norm(x, None, None, training=True).sum()
    >>> with F.reverse_mode_only():
    ...     g = jax.grad(f)(jnp.array([[1.0], [2.0]]))
    >>> print(g.ravel())
    [0. 0.]
    """
    token = _REVERSE_MODE_ONLY.set(True)
    try:
        yield
    finally:
        _REVERSE_MODE_ONLY.reset(token)


def reverse_mode_only_active() -> bool:
    """Whether a :func:`reverse_mode_only` block is active (read by the ops at trace time)."""
    return _REVERSE_MODE_ONLY.get()
