"""Gradient accumulation fed one micro-batch at a time (torch's ``(loss / N).backward(); if (i + 1) % N == 0:
optimizer.step(); optimizer.zero_grad()``): ``make_train_step(accumulate_steps=N, streamed=True)`` and
``fit(loader=...)``, against ``accumulate_steps=N`` on the concatenated micro-batches and against torch (float64).
"""

from __future__ import annotations

import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import cache_size, max_abs_diff, tolerance

from fnml import checkpoint, data, interop, losses, optim, schedules, train

N, B = 3, 4  # micro-batches per optimizer step, rows per micro-batch
ATOL = tolerance("float64")["atol"]


def _torch_model() -> torch.nn.Module:
    # No bias before the BatchNorm: its gradient is zero in exact arithmetic, and Adam turns each side's
    # rounding noise into lr-sized steps (a yardstick torch's own float32 run fails too).
    torch.manual_seed(0)
    linear = torch.nn.Linear(3, 8, bias=False)
    return torch.nn.Sequential(linear, torch.nn.BatchNorm1d(8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()


def _data(micro_batches: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(micro_batches * B, 3, dtype=torch.float64, generator=generator)
    return x, torch.randn(micro_batches * B, 2, dtype=torch.float64, generator=generator)


@pytest.fixture(scope="module")
def ported():
    torch_model = _torch_model()
    return torch_model, interop.from_torch(torch_model, torch.zeros(B, 3, dtype=torch.float64))


def _tx():
    # warm-up then decay: the schedule must count optimizer steps, not micro-batches
    warm = schedules.linear_lr(1e-2, start_factor=0.5, total_iters=2)
    decay = schedules.step_lr(1e-2, step_size=1, gamma=0.5)
    return optim.adamw(lr=schedules.sequential_lr([warm, decay], milestones=[2]), weight_decay=0.1)


def _torch_run(torch_model, x, y):
    model = _torch_model()
    model.load_state_dict(torch_model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.5, total_iters=2)
    decay = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, decay], milestones=[2])
    model.train()
    micro_losses = []
    for i in range(len(x) // B):
        loss = torch.nn.functional.mse_loss(model(x[i * B : (i + 1) * B]), y[i * B : (i + 1) * B])
        (loss / N).backward()
        micro_losses.append(loss.item())
        if (i + 1) % N == 0:
            optimizer.step()
            optimizer.zero_grad()
            scheduler.step()
    return model, micro_losses


def _assert_like_torch(state, torch_model) -> None:
    weights = interop.state_dict(state.model())
    for name, value in torch_model.state_dict().items():
        if value.dtype.is_floating_point:
            assert max_abs_diff(np.asarray(weights[name]), value.numpy()) <= ATOL, name


def test_streamed_equals_concatenated_and_torch(ported):
    torch_model, twin = ported
    steps = 3
    x, y = _data(steps * N)
    streamed = train.make_train_step(losses.MSELoss(), accumulate_steps=N, streamed=True)
    concatenated = train.make_train_step(losses.MSELoss(), accumulate_steps=N)
    by_micro = by_step = train.TrainState.create(twin, _tx())
    micro_losses, step_losses = [], []
    for k in range(steps):
        rows = slice(k * N * B, (k + 1) * N * B)
        by_step, loss = concatenated(by_step, x[rows].numpy(), y[rows].numpy())
        step_losses.append(float(loss))
        for i in range(N):
            assert int(by_micro.step) == k
            micro = slice((k * N + i) * B, (k * N + i + 1) * B)
            by_micro, loss = streamed(by_micro, x[micro], y[micro])  # torch tensors, as a loader yields them
            micro_losses.append(float(loss))
            assert int(by_micro.micro) == (i + 1) % N
        assert int(by_micro.step) == k + 1
    # the same additions in the same order: the same numbers
    assert max_abs_diff((by_micro.params, by_micro.rest), (by_step.params, by_step.rest)) == 0.0
    assert max_abs_diff(jax.tree.leaves(by_micro.opt_state), jax.tree.leaves(by_step.opt_state)) == 0.0
    assert max_abs_diff(np.mean(np.reshape(micro_losses, (steps, N)), axis=1), np.asarray(step_losses)) <= ATOL
    assert max_abs_diff(by_micro.grads, jax.tree.map(jnp.zeros_like, by_micro.params)) == 0.0  # zero_grad()
    reference, torch_losses = _torch_run(torch_model, x, y)
    assert (
        max_abs_diff(np.asarray(micro_losses), np.asarray(torch_losses)) <= ATOL
    )  # each call returns its micro-batch's own loss
    _assert_like_torch(by_micro, reference)  # parameters and BatchNorm statistics (updated per micro-batch)
    assert cache_size(streamed) == 1  # the first call starts the sum outside jit: one structure, one program


def test_streamed_general_form_returns_each_micro_batch_aux(ported):
    _, twin = ported
    x, y = _data(N)

    def loss_fn(model, x, y):
        out = model(x)
        return jnp.mean((out - y) ** 2), out

    step = train.make_train_step(loss_fn=loss_fn, has_aux=True, accumulate_steps=N, streamed=True)
    state = train.TrainState.create(twin, optim.sgd(lr=0.1))
    for i in range(N):
        state, loss, out = step(state, x[i * B : (i + 1) * B].numpy(), y[i * B : (i + 1) * B].numpy())
        assert out.shape == (B, 2)
    assert int(state.step) == 1 and int(state.micro) == 0


def test_pending_gradients_zero_grad_and_the_plain_step(ported):
    _, twin = ported
    x, y = _data(2)
    streamed = train.make_train_step(losses.MSELoss(), accumulate_steps=N, streamed=True)
    plain = train.make_train_step(losses.MSELoss())
    fresh = train.TrainState.create(twin, optim.sgd(lr=0.1))
    pending, _ = streamed(fresh, x[:B].numpy(), y[:B].numpy())
    assert int(pending.micro) == 1 and int(pending.step) == 0
    assert max_abs_diff(pending.params, fresh.params) == 0.0  # no update before the N-th micro-batch
    assert pending.zero_grad().grads is None and pending.zero_grad().micro is None
    # torch's loop begins with optimizer.zero_grad(): the plain step drops what was pending
    after_pending, _ = plain(pending, x[B:].numpy(), y[B:].numpy())
    # the streamed call's BatchNorm update stays (torch's forward made it); only the gradients are dropped
    after_fresh, _ = plain(pending.zero_grad(), x[B:].numpy(), y[B:].numpy())
    assert max_abs_diff(after_pending.params, after_fresh.params) == 0.0
    assert int(after_pending.micro) == 0


def test_a_checkpoint_refuses_pending_gradients_and_drops_a_zero_sum(ported):
    _, twin = ported
    x, y = _data(N)
    streamed = train.make_train_step(losses.MSELoss(), accumulate_steps=N, streamed=True)
    state = train.TrainState.create(twin, optim.sgd(lr=0.1))
    template = state
    with tempfile.TemporaryDirectory() as folder:
        for i in range(N):
            state, _ = streamed(state, x[i * B : (i + 1) * B].numpy(), y[i * B : (i + 1) * B].numpy())
            if i == 0:
                with pytest.raises(ValueError, match=r"save_checkpoint: the state holds the gradients of 1 micro"):
                    checkpoint.save_checkpoint(folder, state, step=1)
                assert checkpoint.all_steps(folder) == []  # nothing written
        checkpoint.save_checkpoint(folder, state, step=1)  # after the update: the zero sum is not stored
        restored = checkpoint.restore_checkpoint(folder, template=template)
    assert restored.grads is None and max_abs_diff(restored.params, state.params) == 0.0


def test_streamed_needs_an_accumulation():
    with pytest.raises(ValueError, match=r"make_train_step: streamed=True .* needs accumulate_steps >= 2 .*got "):
        train.make_train_step(losses.MSELoss(), streamed=True)
    with pytest.raises(TypeError, match=r"make_train_step: streamed must be a bool"):
        train.make_train_step(losses.MSELoss(), accumulate_steps=2, streamed=1)


# --------------------------------------------------------------------------------------------------
# fit(loader=...)
# --------------------------------------------------------------------------------------------------


def _torch_loader(x, y):
    # shuffled by its own seeded generator: fit must draw from it exactly as torch's loop does (nothing extra)
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(dataset, batch_size=B, shuffle=True, generator=torch.Generator().manual_seed(5))


def test_fit_on_a_torch_loader_of_micro_batches_equals_arrays_and_torch(ported):
    torch_model, twin = ported
    x, y = _data(2 * N)
    fit = dict(accumulate_steps=N, verbose=False)
    from_loader = train.fit(twin, _tx(), losses.MSELoss(), loader=_torch_loader(x, y), epochs=2, **fit)
    # the loader's batches, in its order (a same-seeded loader iterated twice), as arrays: fit on them unshuffled
    same = _torch_loader(x, y)
    batches = [batch for _ in range(2) for batch in same]
    xs, ys = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    from_arrays = train.fit(twin, _tx(), losses.MSELoss(), xs.numpy(), ys.numpy(), batch_size=B, epochs=1, **fit)
    assert from_loader.losses.shape == (4,)  # one loss per optimizer step
    assert max_abs_diff(from_loader.losses, from_arrays.losses) <= ATOL
    assert max_abs_diff(from_loader.state.params, from_arrays.state.params) <= ATOL
    assert from_loader.history["lr"][-1] == from_arrays.history["lr"][-1]
    reference, _ = _torch_run(torch_model, xs, ys)  # torch's loop over the same two epochs
    _assert_like_torch(from_loader.state, reference)


def test_fit_general_form_loader_and_exact_resume_with_an_fnml_loader(ported):
    _, twin = ported
    x, y = _data(2 * N)
    loader = data.DataLoader(x.numpy(), y.numpy(), batch_size=B, shuffle=True, key=jax.random.key(3))

    def loss_fn(model, x, y):
        return jnp.mean((model(x) - y) ** 2)

    fit = dict(loss_fn=loss_fn, loader=loader, accumulate_steps=2, verbose=False)
    whole = train.fit(twin, _tx(), epochs=3, **fit)
    with tempfile.TemporaryDirectory() as folder:
        train.fit(twin, _tx(), epochs=1, checkpoint_dir=folder, **fit)
        resumed = train.fit(twin, _tx(), epochs=3, resume_from=folder, **fit)
    # loader.epoch(e) gives the resumed epochs the uninterrupted run's order: bitwise the same
    assert max_abs_diff(resumed.state.params, whole.state.params) == 0.0
    assert max_abs_diff(resumed.losses, whole.losses) == 0.0


class _Stream:
    """A re-iterable without len(), as a streaming dataset is."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def test_fit_loader_non_finite_loss_keeps_the_state_before_the_bad_step(ported):
    _, twin = ported
    x, y = _data(4)
    batches = [(x[i * B : (i + 1) * B].numpy(), y[i * B : (i + 1) * B].numpy()) for i in range(4)]
    batches[3] = (batches[3][0] * np.nan, batches[3][1])  # the 2nd optimizer step's 2nd micro-batch
    with pytest.raises(train.NonFiniteLossError, match=r"non-finite loss nan at step 2 \(epoch 1/1\)") as caught:
        train.fit(
            twin,
            optim.sgd(lr=0.1),
            losses.MSELoss(),
            loader=_Stream(batches),
            accumulate_steps=2,
            epochs=1,
            verbose=False,
        )
    first = train.fit(
        twin, optim.sgd(lr=0.1), losses.MSELoss(), loader=batches[:2], accumulate_steps=2, epochs=1, verbose=False
    )
    assert max_abs_diff(caught.value.state.params, first.state.params) == 0.0
    assert len(caught.value.result.losses) == 1


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(loader=[(1, 2)], X=np.ones((4, 3))), TypeError, r"fit: loader= replaces X, Y \(and data=\)"),
        (dict(loader=5), TypeError, r"fit: loader must be iterable .*got int"),
        (dict(loader=iter([(1, 2)])), TypeError, r"fit: loader is an iterator"),
        (dict(loader=[(1, 2)], batch_size=4), ValueError, r"fit: batch_size=4 with loader=: the loader batches"),
        (dict(loader=[(1, 2)], shuffle=True), ValueError, r"fit: shuffle=True with loader="),
        (dict(loader=[(1, 2)], fused=True), ValueError, r"fit: fused=True with loader="),
        (dict(loader=[(1, 2)] * 3, accumulate_steps=2), ValueError, r"the loader yields 3 per epoch"),
        (dict(loader=[]), ValueError, r"the loader yields 0 per epoch"),
    ],
)
def test_fit_loader_errors_before_training(ported, kwargs, error, match):
    _, twin = ported
    with pytest.raises(error, match=match):
        train.fit(twin, optim.sgd(lr=0.1), losses.MSELoss(), epochs=1, verbose=False, **kwargs)


def test_fit_loader_errors_found_while_iterating(ported):
    _, twin = ported
    x, y = _data(3)
    pair = (x[:B].numpy(), y[:B].numpy())
    fit = dict(epochs=1, verbose=False)
    with pytest.raises(ValueError, match=r"fit: epoch 1: the loader yielded 3 micro-batches, not a multiple of "):
        train.fit(twin, optim.sgd(lr=0.1), losses.MSELoss(), loader=_Stream([pair] * 3), accumulate_steps=2, **fit)
    with pytest.raises(TypeError, match=r"fit: loader item 0 of epoch 1 must be a tuple or list .*got dict"):
        train.fit(twin, optim.sgd(lr=0.1), losses.MSELoss(), loader=[{"x": pair[0]}], **fit)
    with pytest.raises(TypeError, match=r"fit: loader item 0 of epoch 1 must be a pair \(x, y\) .*got 3 parts"):
        train.fit(twin, optim.sgd(lr=0.1), losses.MSELoss(), loader=[(*pair, pair[1])], **fit)


def test_streamed_on_a_mesh_with_donation_and_check_finite_equals_concatenated():
    from flax import nnx

    from fnml import device, layers

    state = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.adam(lr=0.1))
    x, y = np.random.default_rng(0).normal(size=(8, 2)), np.ones((8, 1))
    concatenated = train.make_train_step(losses.MSELoss(), accumulate_steps=2)
    expected = state
    for k in range(2):
        expected, _ = concatenated(expected, x[4 * k : 4 * k + 4], y[4 * k : 4 * k + 4])
    variants = {
        "fsdp mesh": dict(mesh=device.mesh(), shard_min_size=1),
        "donate + check_finite": dict(donate=True, check_finite=True),
    }
    for name, options in variants.items():
        step = train.make_train_step(losses.MSELoss(), accumulate_steps=2, streamed=True, **options)
        streamed = jax.tree.map(jnp.copy, state)  # a donating step consumes its input state
        for i in range(4):
            streamed, _ = step(streamed, x[2 * i : 2 * i + 2], y[2 * i : 2 * i + 2])
        assert max_abs_diff(streamed.params, expected.params) == 0.0, name
    bad = x.copy()
    bad[3] = np.nan  # micro-batch 2 of optimizer step 1
    step = train.make_train_step(losses.MSELoss(), accumulate_steps=2, streamed=True, check_finite=True)
    streamed = state
    with pytest.raises(train.NonFiniteError, match=r"check_finite: step 1: the loss is nan"):
        for i in range(2):
            streamed, _ = step(streamed, bad[2 * i : 2 * i + 2], y[2 * i : 2 * i + 2])
