"""fnml.functional.embedding and layers.Embedding against torch: padding_idx, scale_grad_by_freq, max_norm's
in-place renormalisation (eager, over nnx training steps, and in fnml's training step next to torch's optimizer),
the loud refusal in fnml's evaluation step, out-of-range indices (IndexError eagerly, NaN rows under jit),
from_pretrained.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from helpers import assert_trees_close, jax_dtype, torch_dtype

from fnml import functional as F
from fnml import layers, train

INDICES = np.array([[0, 2, 2, 4], [4, 1, 0, 2]])  # repeats: scale_grad_by_freq and duplicate renorm rows


def _weight(dtype: str, scale: float = 2.0) -> np.ndarray:
    return (scale * np.random.default_rng(0).standard_normal((5, 3))).astype(dtype)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"padding_idx": 1},
        {"padding_idx": -1},
        {"scale_grad_by_freq": True},
        {"padding_idx": 2, "scale_grad_by_freq": True},
    ],  # noqa: E501
    ids=["plain", "padding_idx", "padding_idx-negative", "scale_grad_by_freq", "padding+scale"],
)
def test_functional_embedding_forward_and_weight_gradient_match_torch(options, dtype):
    weight = _weight(dtype)
    cotangent = np.random.default_rng(1).standard_normal((*INDICES.shape, 3)).astype(dtype)
    wt = torch.tensor(weight, requires_grad=True)
    out = torch.nn.functional.embedding(torch.from_numpy(INDICES), wt, **options)
    (grad_t,) = torch.autograd.grad(out, wt, torch.as_tensor(cotangent))
    value, pullback = jax.vjp(lambda w: F.embedding(jnp.asarray(INDICES), w, **options), jnp.asarray(weight))
    assert_trees_close((value, *pullback(jnp.asarray(cotangent))), (out.detach(), grad_t), dtype=dtype)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")], ids=["l2", "l1", "l3", "linf"])
def test_max_norm_renormalises_the_weight_in_place_like_torch(norm_type, dtype):
    torch_emb = torch.nn.Embedding(5, 3, max_norm=1.5, norm_type=norm_type).to(torch_dtype(dtype))
    with torch.no_grad():
        torch_emb.weight.copy_(torch.from_numpy(_weight(dtype)))
    emb = layers.Embedding(5, 3, max_norm=1.5, norm_type=norm_type, param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0))
    emb.weight[...] = jnp.asarray(_weight(dtype))
    first = np.array([[0, 2], [2, 4]])
    assert_trees_close(emb(jnp.asarray(first)), torch_emb(torch.from_numpy(first)).detach(), dtype=dtype)
    # The referenced rows of the weight itself changed (row 1 and 3 did not), as torch's in-place renorm.
    assert_trees_close(emb.weight[...], torch_emb.weight.detach(), dtype=dtype)
    assert not np.allclose(np.asarray(emb.weight[...]), _weight(dtype))
    np.testing.assert_array_equal(np.asarray(emb.weight[...])[[1, 3]], _weight(dtype)[[1, 3]])
    second = np.array([1, 3, 0])
    assert_trees_close(emb(jnp.asarray(second)), torch_emb(torch.from_numpy(second)).detach(), dtype=dtype)
    assert_trees_close(emb.weight[...], torch_emb.weight.detach(), dtype=dtype)


def test_functional_max_norm_writes_into_a_param_and_refuses_a_plain_array():
    weight = nnx.Param(jnp.asarray(_weight("float64")))
    torch_weight = torch.from_numpy(_weight("float64"))
    out = F.embedding(jnp.asarray(INDICES), weight, max_norm=1.0)
    expected = torch.nn.functional.embedding(torch.from_numpy(INDICES), torch_weight, max_norm=1.0)
    assert_trees_close((out, weight[...]), (expected, torch_weight))
    with pytest.raises(ValueError, match=r"embedding: max_norm renormalises the weight IN PLACE in torch"):
        F.embedding(jnp.asarray(INDICES), jnp.asarray(_weight("float64")), max_norm=1.0)
    renormed = F.embedding_renorm(jnp.asarray(_weight("float64")), jnp.asarray(INDICES), 1.0)
    assert_trees_close(renormed, torch_weight)


def _torch_steps(steps, lr, momentum):
    emb = torch.nn.Embedding(5, 3, max_norm=1.0).double()
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(_weight("float64")))
    opt = torch.optim.SGD(emb.parameters(), lr=lr, momentum=momentum)
    target = torch.from_numpy(np.random.default_rng(2).standard_normal((*INDICES.shape, 3)))
    weights, losses = [], []
    for step in range(steps):
        opt.zero_grad()
        loss = ((emb(torch.from_numpy(np.roll(INDICES, step))) - target) ** 2).sum()
        loss.backward()
        opt.step()
        weights.append(emb.weight.detach().clone())
        losses.append(loss.item())
    return weights, losses, target.numpy()


def test_max_norm_training_with_nnx_transforms_matches_torch_step_by_step():
    lr, momentum, steps = 0.05, 0.9, 4
    torch_weights, torch_losses, target = _torch_steps(steps, lr, momentum)
    model = layers.Embedding(5, 3, max_norm=1.0, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    model.weight[...] = jnp.asarray(_weight("float64"))
    optimizer = nnx.Optimizer(model, optax.sgd(lr, momentum=momentum), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, indices):
        def loss_fn(model):
            return jnp.sum((model(indices) - jnp.asarray(target)) ** 2)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)  # updates the renormalised weight, as torch's optimizer does
        return loss

    for index in range(steps):
        loss = step(model, optimizer, jnp.asarray(np.roll(INDICES, index)))
        assert_trees_close(loss, torch_losses[index])
        assert_trees_close(model.weight[...], torch_weights[index])


@pytest.mark.parametrize("accumulate_steps", [1, 2], ids=["one-batch", "accumulate-2"])
def test_max_norm_inside_fnml_train_step_matches_torch_step_by_step(accumulate_steps):
    """fnml.train's step keeps the in-place renormalisation: its optimizer updates the renormalised weight."""
    lr, momentum, steps = 0.05, 0.9, 4
    target = np.random.default_rng(2).standard_normal((*INDICES.shape, 3))
    # torch: the same loop, with (loss / N).backward() over N micro-batches when accumulating.
    emb = torch.nn.Embedding(5, 3, max_norm=1.0).double()
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(_weight("float64")))
    opt = torch.optim.SGD(emb.parameters(), lr=lr, momentum=momentum)
    torch_weights, torch_losses = [], []
    for index in range(steps):
        opt.zero_grad()
        rows = np.roll(INDICES, index)
        total = 0.0
        for micro_rows, micro_target in zip(np.split(rows, accumulate_steps), np.split(target, accumulate_steps)):
            loss = ((emb(torch.from_numpy(micro_rows)) - torch.from_numpy(micro_target)) ** 2).sum()
            (loss / accumulate_steps).backward()
            total += loss.item() / accumulate_steps
        opt.step()
        torch_weights.append(emb.weight.detach().clone())
        torch_losses.append(total)

    model = layers.Embedding(5, 3, max_norm=1.0, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    model.weight[...] = jnp.asarray(_weight("float64"))
    state = train.TrainState.create(model, optax.sgd(lr, momentum=momentum))
    step = train.make_train_step(lambda out, y: jnp.sum((out - y) ** 2), accumulate_steps=accumulate_steps)
    for index in range(steps):
        state, loss = step(state, jnp.asarray(np.roll(INDICES, index)), jnp.asarray(target))
        assert_trees_close(loss, torch_losses[index])
        assert_trees_close(state.params["weight"], torch_weights[index])


def test_max_norm_inside_fnml_eval_step_refuses_loudly():
    model = layers.Embedding(5, 3, max_norm=1.0, rngs=nnx.Rngs(0))
    state = train.TrainState.create(model, optax.sgd(0.1))
    evaluate = train.make_eval_step(lambda out, y: jnp.mean((out - y) ** 2))
    with pytest.raises(
        NotImplementedError, match=r"embedding: max_norm inside fnml's evaluation step .* differ from torch silently"
    ):
        evaluate(state, jnp.asarray(INDICES), jnp.zeros((*INDICES.shape, 3)))
    # Without max_norm the same model evaluates there.
    plain = train.TrainState.create(layers.Embedding(5, 3, rngs=nnx.Rngs(0)), optax.sgd(0.1))
    assert np.isfinite(float(evaluate(plain, jnp.asarray(INDICES), jnp.zeros((*INDICES.shape, 3)))["loss"]))


def test_out_of_range_indices_raise_eagerly_and_give_nan_rows_under_jit():
    emb = layers.Embedding(5, 3, rngs=nnx.Rngs(0))
    with pytest.raises(IndexError, match=r"index 5 is out of range \[0, 4\]"):
        emb(jnp.array([0, 5]))
    with pytest.raises(IndexError):  # torch raises too
        torch.nn.Embedding(5, 3)(torch.tensor([0, 5]))
    rows = nnx.jit(lambda m, i: m(i))(emb, jnp.array([0, 5, -1, 4]))
    assert np.isnan(np.asarray(rows[1:3])).all()  # never a clamped (row 4) or wrapped (row 4) row
    np.testing.assert_array_equal(rows[0], emb.weight[...][0])
    np.testing.assert_array_equal(rows[3], emb.weight[...][4])
    grads = jax.jit(jax.grad(lambda w, i: jnp.sum(F.embedding(i, w)[0])))(emb.weight[...], jnp.array([0, 5]))
    assert np.isfinite(np.asarray(grads)).all()


def test_from_pretrained_matches_torch():
    weight = _weight("float32")
    ours = layers.Embedding.from_pretrained(jnp.asarray(weight), padding_idx=1)
    theirs = torch.nn.Embedding.from_pretrained(torch.from_numpy(weight), padding_idx=1)
    assert str(ours) == str(theirs)
    assert layers.is_frozen(None, ours.weight) and not theirs.weight.requires_grad
    np.testing.assert_array_equal(np.asarray(ours.weight[...]), theirs.weight.detach().numpy())  # row 1 kept as given
    trainable = layers.Embedding.from_pretrained(jnp.asarray(weight), freeze=False)
    assert layers.is_trainable(None, trainable.weight)
    assert_trees_close(ours(jnp.asarray(INDICES)), theirs(torch.from_numpy(INDICES)).detach(), dtype="float32")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"padding_idx": 0}, {"max_norm": 1.0}, {"max_norm": 2.0, "norm_type": 1.0}, {"scale_grad_by_freq": True}],
    ids=["plain", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq"],
)
def test_embedding_prints_like_torch(kwargs):
    assert str(layers.Embedding(10, 3, **kwargs, rngs=nnx.Rngs(0))) == str(torch.nn.Embedding(10, 3, **kwargs))


ERRORS = {
    "sparse": (
        lambda: layers.Embedding(5, 2, sparse=True, rngs=nnx.Rngs(0)),
        ValueError,
        r"Embedding: sparse=True \(sparse gradients\) has no JAX counterpart",
    ),  # noqa: E501
    "max_norm_negative": (
        lambda: layers.Embedding(5, 2, max_norm=-1.0, rngs=nnx.Rngs(0)),
        ValueError,
        r"Embedding: max_norm must be >= 0",
    ),  # noqa: E501
    "max_norm_string": (
        lambda: layers.Embedding(5, 2, max_norm="1", rngs=nnx.Rngs(0)),
        TypeError,
        r"Embedding: max_norm must be a number",
    ),  # noqa: E501
    "norm_type_zero": (
        lambda: layers.Embedding(5, 2, norm_type=0.0, rngs=nnx.Rngs(0)),
        ValueError,
        r"Embedding: norm_type must be > 0",
    ),  # noqa: E501
    "scale_grad_int": (
        lambda: layers.Embedding(5, 2, scale_grad_by_freq=1, rngs=nnx.Rngs(0)),
        TypeError,
        r"Embedding: scale_grad_by_freq must be a bool",
    ),  # noqa: E501
    "functional_weight_1d": (
        lambda: F.embedding(jnp.array([0]), jnp.ones(3)),
        ValueError,
        r"embedding: weight must be 2-D",
    ),  # noqa: E501
    "functional_float_indices": (
        lambda: F.embedding(jnp.array([0.0]), jnp.ones((2, 3))),
        TypeError,
        r"embedding: indices must be an integer array",
    ),  # noqa: E501
    "functional_out_of_range": (
        lambda: F.embedding(jnp.array([2]), jnp.ones((2, 3))),
        IndexError,
        r"embedding\(num_embeddings=2\): index 2 is out of range \[0, 1\]",
    ),  # noqa: E501
    "functional_padding_idx_range": (
        lambda: F.embedding(jnp.array([0]), jnp.ones((2, 3)), padding_idx=2),
        ValueError,
        r"embedding: padding_idx must be within num_embeddings=2",
    ),  # noqa: E501
    "functional_sparse": (
        lambda: F.embedding(jnp.array([0]), jnp.ones((2, 3)), sparse=True),
        ValueError,
        r"embedding: sparse=True",
    ),  # noqa: E501
    "renorm_norm_type": (
        lambda: F.embedding_renorm(jnp.ones((2, 3)), jnp.array([0]), 1.0, -2.0),
        ValueError,
        r"embedding_renorm: norm_type must be > 0",
    ),  # noqa: E501
    "from_pretrained_1d": (
        lambda: layers.Embedding.from_pretrained(jnp.ones(3)),
        ValueError,
        r"Embedding.from_pretrained: embeddings must be 2-D",
    ),  # noqa: E501
    "from_pretrained_freeze_int": (
        lambda: layers.Embedding.from_pretrained(jnp.ones((2, 2)), freeze=1),
        TypeError,
        r"Embedding.from_pretrained: freeze must be a bool",
    ),  # noqa: E501
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_arguments_raise_with_a_message(case):
    make, error, message = ERRORS[case]
    with pytest.raises(error, match=message):
        make()
