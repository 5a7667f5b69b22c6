"""Named regression tests for the problems the hardening work found, each with what was wrong.

The property-based fuzzers (tests/test_fuzz_*.py) found no parity bug in layers or losses; they found
one convention gap in NAdam (pinned below), and the crash-safety work found three gaps in fit/checkpoint.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers import assert_trees_close, copy_torch_weights, jax_dtype, torch_dtype

from fnml import checkpoint, interop, layers, losses, optim, train


def _nadam_params(default_dtype):
    """One NAdam step on float64 parameters, torch with the given default dtype vs fnml."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        rng = np.random.default_rng(0)
        p0, g = rng.standard_normal(5), rng.standard_normal(5)
        tp = torch.tensor(p0, requires_grad=True)
        opt = torch.optim.NAdam([tp], lr=1e-3)
        tp.grad = torch.tensor(g)
        opt.step()
    finally:
        torch.set_default_dtype(previous)
    tx = optim.nadam(lr=1e-3)
    params = jnp.asarray(p0)
    updates, _ = tx.update(jnp.asarray(g), tx.init(params), params)
    return np.asarray(params + updates), tp.detach().numpy()


def test_nadam_mu_product_follows_the_parameter_dtype():
    """Found by test_fuzz_optim: torch keeps NAdam's ``mu_product`` (and ``step``) in torch's DEFAULT dtype,
    so float64 parameters under the default float32 differ from fnml (which uses the parameters' dtype, i.e.
    mirrors ``torch.set_default_dtype(torch.float64)``) by ~1.3e-11 after one step (relative 1e-8 of the
    update). Pinned: exact under the mirrored default, the measured gap under torch's float32 default."""
    ours, theirs = _nadam_params(torch.float64)
    assert np.max(np.abs(ours - theirs)) <= 1e-15
    ours, theirs = _nadam_params(torch.float32)
    gap = np.max(np.abs(ours - theirs))
    assert 1e-13 < gap < 1e-9, gap


def _fit(ckpt, epochs, **kw):
    X = np.random.default_rng(0).standard_normal((8, 2)).astype(np.float32)
    return train.fit(
        layers.SimpleNN(rngs=nnx.Rngs(0)),
        optim.adam(lr=1e-2),
        losses.MSELoss(),
        X,
        X[:, :1],
        epochs=epochs,
        batch_size=4,
        checkpoint_dir=str(ckpt),
        checkpoint_every=1,
        verbose=False,
        **kw,
    )


def test_resume_skips_a_truncated_newest_checkpoint(tmp_path):
    """Was: ``fit(resume_from=...)`` restored the newest step whatever its state (a truncated file made
    orbax fail or, worse, load garbage) and read the metadata of the newest step independently. Now a
    manifest is verified and the state and metadata come from the same newest GOOD step."""
    full = _fit(tmp_path / "full", 3)
    _fit(tmp_path / "ck", 2)
    newest = tmp_path / "ck" / "4"
    files = [os.path.join(r, f) for r, _, fs in os.walk(newest) for f in fs if f != checkpoint.MANIFEST]
    victim = max(files, key=os.path.getsize)
    with open(victim, "r+b") as handle:
        handle.truncate(3)
    with pytest.warns(checkpoint.CorruptCheckpointWarning, match="truncated or altered"):
        resumed = _fit(tmp_path / "ck", 3, resume_from=str(tmp_path / "ck"))
    np.testing.assert_array_equal(resumed.losses, full.losses)
    for a, b in zip(jax.tree.leaves(resumed.state.params), jax.tree.leaves(full.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_ctrl_c_during_fit_keeps_the_progress(tmp_path):
    """Was: a KeyboardInterrupt between periodic checkpoints lost every epoch since the last one (and with
    ``checkpoint_every=None`` all of them). Now the chunk-boundary state is saved, then the interrupt
    propagates."""

    class Interrupt(train.Callback):
        def on_epoch_end(self, epoch, logs, state):
            if epoch == 2:
                raise KeyboardInterrupt

    X = np.ones((4, 2), np.float32)
    with pytest.raises(KeyboardInterrupt):
        train.fit(
            layers.SimpleNN(rngs=nnx.Rngs(0)),
            optim.sgd(lr=0.1),
            losses.MSELoss(),
            X,
            X[:, :1],
            epochs=4,
            checkpoint_dir=str(tmp_path),
            callbacks=[Interrupt()],
            verbose=False,
        )
    assert checkpoint.all_steps(tmp_path) == [1]


def test_check_finite_leaves_the_default_step_program_unchanged():
    """The debug mode must cost nothing when off: the default step's program has no finiteness checks."""
    state = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=0.1))
    x, y = jnp.ones((3, 2)), jnp.ones((3, 1))
    plain = str(jax.make_jaxpr(train._pure_train_step(losses.MSELoss()))(state, x, y))
    checked = str(jax.make_jaxpr(train._pure_train_step(losses.MSELoss(), report=True))(state, x, y))
    assert "is_finite" not in plain and "is_finite" in checked


class _TorchSimpleNN(torch.nn.Module):
    """The tutorial's torch model (fc1 -> relu -> fc2)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_tests_weight_copier_matches_torch_and_interop(dtype):
    """tests/helpers.copy_torch_weights (independent of fnml.interop) gives torch's forward and interop's weights."""
    torch_model = _TorchSimpleNN().to(torch_dtype(dtype))
    model = layers.SimpleNN(param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0))
    copy_torch_weights(model, torch_model)
    x = np.random.default_rng(0).standard_normal((4, 2)).astype(dtype)
    assert_trees_close(model(jnp.asarray(x)), torch_model(torch.tensor(x)), dtype=dtype)
    assert_trees_close(interop.state_dict(model), torch_model.state_dict(), dtype=dtype)

    torch_lstm = torch.nn.LSTM(3, 4, num_layers=2).to(torch_dtype(dtype))
    lstm = layers.LSTM(3, 4, num_layers=2, param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0))
    copy_torch_weights(lstm, torch_lstm)
    sequence = np.random.default_rng(1).standard_normal((5, 2, 3)).astype(dtype)  # (T, N, features)
    assert_trees_close(lstm(jnp.asarray(sequence))[0], torch_lstm(torch.tensor(sequence))[0], dtype=dtype)
