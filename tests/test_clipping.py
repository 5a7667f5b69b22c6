"""fnml.optim.clip_grad_norm / clip_grad_value against torch.nn.utils.clip_grad_norm_ / clip_grad_value_."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from helpers import assert_trees_close, max_abs_diff, one_torch_thread, torch_dtype
from test_optim import NAMES, assert_parity, torch_run

from fnml import optim


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():  # torch on tiny tensors: its thread pool only costs (helpers.one_torch_thread)
        yield


def _grads(dtype, scale=1.0):
    """A gradient pytree (numpy) of three leaves with different shapes."""
    rng = np.random.default_rng(7)
    return {
        "w": scale * rng.normal(size=(4, 3)),
        "b": scale * rng.normal(size=(4,)),
        "v": scale * rng.normal(size=(2, 2, 2)),
    }


def _torch_clip_norm(grads, dtype, max_norm, norm_type):
    """torch: clip_grad_norm_ on parameters holding ``grads``; returns (clipped grads, total_norm)."""
    t_dtype = torch_dtype(dtype)
    params = {k: torch.zeros(v.shape, dtype=t_dtype, requires_grad=True) for k, v in grads.items()}
    for k, p in params.items():
        p.grad = torch.tensor(grads[k], dtype=t_dtype)
    total = torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm, norm_type=norm_type)
    return {k: p.grad for k, p in params.items()}, total


NORM_CASES = [
    # (id, max_norm, norm_type, gradient scale): fires / does not fire, 2-norm, inf, 1, p=3
    ("l2-fires", 1.0, 2.0, 1.0),
    ("l2-does-not-fire", 100.0, 2.0, 1.0),
    ("inf-fires", 0.5, math.inf, 1.0),
    ("inf-string-fires", 0.5, "inf", 1.0),
    ("inf-does-not-fire", 10.0, math.inf, 1.0),
    ("l1-fires", 2.0, 1.0, 1.0),
    ("l1-does-not-fire", 1e3, 1.0, 1.0),
    ("p3-fires", 0.3, 3.0, 1.0),
    ("tiny-grads", 1.0, 2.0, 1e-9),
]


@pytest.mark.parametrize("case", NORM_CASES, ids=[c[0] for c in NORM_CASES])
def test_clip_grad_norm_matches_torch(case, dtype):
    _, max_norm, norm_type, scale = case
    grads = _grads(dtype, scale)
    torch_clipped, torch_total = _torch_clip_norm(grads, dtype, max_norm, norm_type)
    fnml_grads = {k: jnp.asarray(v, dtype) for k, v in grads.items()}
    total = optim.get_total_norm(fnml_grads, norm_type)
    assert_trees_close(total, torch_total, dtype=dtype)
    # The coefficient torch applies: min(max_norm / (total + 1e-6), 1).
    coefficient = min(max_norm / (float(torch_total) + 1e-6), 1.0)
    fires = coefficient < 1.0
    assert fires == (case[0].endswith("-fires")), f"case {case[0]!r} is mislabelled: coefficient {coefficient}"
    tx = optim.clip_grad_norm(max_norm, norm_type)
    clipped, _ = jax.jit(tx.update)(fnml_grads, tx.init(fnml_grads))
    assert_trees_close(clipped, torch_clipped, dtype=dtype)
    assert_trees_close(optim.clip_grads_with_norm(fnml_grads, max_norm, total), torch_clipped, dtype=dtype)
    if not fires:
        # Multiplied by exactly 1: the gradients are untouched, bit for bit.
        assert max_abs_diff(clipped, fnml_grads) == 0.0
    for leaf in jax.tree.leaves(clipped):
        assert leaf.dtype == jnp.dtype(dtype)


def test_clip_grad_norm_has_torch_epsilon():
    """optax.clip_by_global_norm has no +1e-6: fnml must differ from it exactly by torch's factor."""
    grads = {"w": jnp.asarray([3.0, 4.0], jnp.float64)}  # norm 5
    tx = optim.clip_grad_norm(1.0)
    clipped, _ = tx.update(grads, tx.init(grads))
    np.testing.assert_allclose(np.asarray(clipped["w"]), np.array([3.0, 4.0]) / (5.0 + 1e-6), rtol=1e-15)
    stock, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    assert max_abs_diff(clipped, stock) > 1e-7


def test_clip_grad_value_matches_torch(dtype):
    grads = _grads(dtype)
    t_dtype = torch_dtype(dtype)
    params = {k: torch.zeros(v.shape, dtype=t_dtype, requires_grad=True) for k, v in grads.items()}
    for k, p in params.items():
        p.grad = torch.tensor(grads[k], dtype=t_dtype)
    torch.nn.utils.clip_grad_value_(list(params.values()), 0.5)
    fnml_grads = {k: jnp.asarray(v, dtype) for k, v in grads.items()}
    tx = optim.clip_grad_value(0.5)
    clipped, _ = tx.update(fnml_grads, tx.init(fnml_grads))
    assert_trees_close(clipped, {k: p.grad for k, p in params.items()}, dtype=dtype, atol=0.0, rtol=0.0)
    assert float(max(jnp.max(jnp.abs(leaf)) for leaf in jax.tree.leaves(clipped))) == 0.5


CHAINED = [
    (
        "norm-sgd-momentum",
        lambda: optim.clip_grad_norm(0.05),
        optim.sgd,
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.9),
        lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.05),
    ),
    (
        "inf-norm-adam",
        lambda: optim.clip_grad_norm(0.02, math.inf),
        optim.adam,
        torch.optim.Adam,
        dict(lr=1e-2),
        lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.02, norm_type=math.inf),
    ),
    (
        "value-sgd-nesterov",
        lambda: optim.clip_grad_value(0.01),
        optim.sgd,
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.9, nesterov=True),
        lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.01),
    ),
]


@pytest.mark.parametrize("case", CHAINED, ids=[c[0] for c in CHAINED])
def test_clipping_chained_before_optimizer_matches_torch_training(case, dtype):
    """optax.chain(clip, optimizer) == clip_grad_*_ between backward() and step(), over 100 steps."""
    _, make_clip, factory, torch_cls, kwargs, torch_clip = case
    # Non-vacuous: the first step's gradient is clipped (the clipped gradient differs from the raw one).
    _, raw = torch_run(lambda named: torch_cls(list(named.values()), **kwargs), "float64", steps=1)
    first = {n: jnp.asarray(raw[n][0]) for n in NAMES}
    clipped, _ = make_clip().update(first, optax.EmptyState())
    assert max_abs_diff(clipped, first) > 1e-3
    tx = optax.chain(make_clip(), factory(**kwargs))
    assert_parity(tx, lambda named: torch_cls(list(named.values()), **kwargs), dtype, clip=torch_clip)


def test_error_if_nonfinite_raises_eagerly_and_under_jit():
    grads = {"w": jnp.asarray([1.0, jnp.inf]), "b": jnp.ones(2)}
    with pytest.raises(RuntimeError, match="total norm of order 2.0 for gradients is non-finite"):
        optim.get_total_norm(grads, error_if_nonfinite=True)
    tx = optim.clip_grad_norm(1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match="is non-finite"):
        tx.update(grads, tx.init(grads))
    with pytest.raises(jax.errors.JaxRuntimeError, match="is non-finite"):
        jax.block_until_ready(jax.jit(tx.update)(grads, tx.init(grads)))
    # torch agrees that this is an error, and by default (flag off) both scale by the inf norm.
    params = [torch.zeros(2, requires_grad=True)]
    params[0].grad = torch.tensor([1.0, math.inf])
    with pytest.raises(RuntimeError, match="non-finite"):
        torch.nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    finite = {"w": jnp.asarray([1.0, 2.0])}
    clipped, _ = jax.jit(tx.update)(finite, tx.init(finite))
    assert np.all(np.isfinite(np.asarray(clipped["w"])))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: optim.clip_grad_norm(-1.0), ValueError, "clip_grad_norm: max_norm must be >= 0"),
        (lambda: optim.clip_grad_norm(1.0, norm_type=0.0), ValueError, "norm_type must be > 0, inf or -inf"),
        (lambda: optim.clip_grad_norm(1.0, norm_type=-2.0), ValueError, "got norm_type=-2.0"),
        (lambda: optim.clip_grad_norm(1.0, norm_type="l2"), TypeError, "norm_type must be a number"),
        (lambda: optim.clip_grad_value(-0.5), ValueError, "clip_grad_value: clip_value must be >= 0"),
        (
            lambda: optim.get_total_norm({"w": jnp.ones(2)}, norm_type=float("nan")),
            ValueError,
            "norm_type must be",
        ),
        (
            lambda: optim.clip_grads_with_norm({"w": jnp.ones(2)}, -1.0, 1.0),
            ValueError,
            "max_norm must be >= 0",
        ),
    ],
    ids=[
        "negative-max_norm",
        "zero-norm_type",
        "negative-norm_type",
        "string-norm_type",
        "negative-clip_value",
        "nan-norm_type",
        "negative-max_norm-functional",
    ],
)
def test_bad_clipping_arguments_raise(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_minus_inf_norm_and_empty_tree():
    grads = {"w": jnp.asarray([0.5, -2.0]), "b": jnp.asarray([1.0])}
    torch_norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(torch.tensor(np.asarray(g)), -math.inf) for g in grads.values()]),
        -math.inf,
    )
    assert float(optim.get_total_norm(grads, -math.inf)) == float(torch_norm)
    assert float(optim.get_total_norm({})) == 0.0
