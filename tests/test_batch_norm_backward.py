"""BatchNorm's training-mode gradient: the closed-form backward the training step uses, and the JVP form.

``fnml.functional`` differentiates training-mode batch norm by hand: a closed-form JVP (every AD mode),
and inside fnml's training step (``functional.reverse_mode_only``, reverse mode only) a ``custom_vjp``
with the classic backward. Both are checked against torch's autograd in float64 and float32, with and
without the affine, channels-first and channels-last; forward-mode AD still works outside the step.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import tolerance

from fnml import functional as F

MODES = {"jvp_form": contextlib.nullcontext, "reverse_mode_only": F.reverse_mode_only}


def _torch_reference(x, weight, bias, cotangent):
    """torch.nn.functional.batch_norm(training=True) on (N, C, *): output, input/weight/bias grads, stats."""
    tx = torch.tensor(x, requires_grad=True)
    tw = None if weight is None else torch.tensor(weight, requires_grad=True)
    tb = None if bias is None else torch.tensor(bias, requires_grad=True)
    mean, var = torch.zeros(x.shape[1], dtype=tx.dtype), torch.ones(x.shape[1], dtype=tx.dtype)
    out = torch.nn.functional.batch_norm(tx, mean, var, tw, tb, training=True, momentum=0.1)
    out.backward(torch.tensor(cotangent))
    grads = [tx.grad.numpy()] + [t.grad.numpy() for t in (tw, tb) if t is not None]
    return out.detach().numpy(), grads, (mean.numpy(), var.numpy())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("shape", [(6, 3, 4, 5), (5, 4, 7), (8, 3)], ids=["nchw", "ncl", "nc"])
@pytest.mark.parametrize("mode", MODES)
def test_training_batch_norm_gradients_match_torch(mode, shape, affine, dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    cotangent = rng.standard_normal(shape).astype(dtype)
    weight = rng.standard_normal(shape[1]).astype(dtype) if affine else None
    bias = rng.standard_normal(shape[1]).astype(dtype) if affine else None
    expected_out, expected_grads, (torch_mean, torch_var) = _torch_reference(x, weight, bias, cotangent)

    def forward(x, *params):
        w, b = params if affine else (None, None)
        return F.batch_norm_with_stats(x, jnp.zeros(shape[1], dtype), jnp.ones(shape[1], dtype), w, b, training=True)

    def forward_and_pullback(args, cotangent):
        (out, mean, var), pull = jax.vjp(forward, *args)
        return (out, mean, var), pull((cotangent, jnp.zeros_like(mean), jnp.zeros_like(var)))

    args = (jnp.asarray(x),) + ((jnp.asarray(weight), jnp.asarray(bias)) if affine else ())
    # One compiled program (op-by-op dispatch compiled every primitive separately); traced inside the mode.
    with MODES[mode]():
        (out, mean, var), grads = jax.jit(forward_and_pullback)(args, jnp.asarray(cotangent))
    tol = tolerance(dtype)
    np.testing.assert_allclose(np.asarray(out), expected_out, rtol=tol["rtol"], atol=tol["atol"])
    for got, want in zip(grads, expected_grads):
        np.testing.assert_allclose(np.asarray(got), want, rtol=tol["rtol"], atol=tol["atol"] * 10)
    np.testing.assert_allclose(np.asarray(mean), torch_mean, rtol=tol["rtol"], atol=tol["atol"])
    np.testing.assert_allclose(np.asarray(var), torch_var, rtol=tol["rtol"], atol=tol["atol"])


def test_the_two_backward_forms_agree_and_the_forward_is_unchanged():
    """Same forward bits in both modes; gradients equal to float64 rounding."""
    x = jnp.asarray(np.random.default_rng(1).standard_normal((4, 6, 6, 3)))
    w, b = jnp.linspace(0.5, 1.5, 3), jnp.linspace(-1.0, 1.0, 3)

    def loss(x, w, b):
        return jnp.sum(jnp.sin(F.batch_norm(x, None, None, w, b, training=True, channels_last=True)))

    plain = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(x, w, b)
    with F.reverse_mode_only():  # traced inside the block: a separate jit of its own
        fast = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(x, w, b)
    assert float(plain[0]) == float(fast[0])
    for a, c in zip(plain[1], fast[1]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=0, atol=1e-13)


def test_forward_mode_and_second_order_work_outside_the_training_step():
    """jax.jvp / jax.hessian through training-mode batch norm (the JVP form), against torch's double backward."""
    x = np.random.default_rng(2).standard_normal((5, 2))

    def f(v):
        return jnp.sum(F.batch_norm(v, None, None, training=True) ** 3)

    hessian = np.asarray(jax.jit(jax.hessian(f))(jnp.asarray(x))).reshape(10, 10)
    expected = torch.autograd.functional.hessian(
        lambda v: (torch.nn.functional.batch_norm(v, None, None, training=True) ** 3).sum(), torch.tensor(x)
    ).reshape(10, 10)
    np.testing.assert_allclose(hessian, expected.numpy(), rtol=1e-10, atol=1e-10)
