"""fnml.checkpoint: full TrainState round trip (bitwise), keep-last-N, atomicity, metadata, errors."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # noqa: F401  (the suite requires torch; checkpoints themselves do not)
from flax import nnx
from helpers import run_python

from fnml import checkpoint, layers, losses, optim, train

MSE = losses.MSELoss()
ADAM = optim.adam(lr=1e-2)


class Net(nnx.Module):
    def __init__(self, *, rngs):
        self.fc = layers.Linear(3, 4, rngs=rngs)
        self.bn = layers.BatchNorm1d(4)
        self.drop = layers.Dropout(0.5, rngs=rngs)
        self.out = layers.Linear(4, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(self.bn(self.fc(x))))


def _trained_state(steps=3):
    state = train.TrainState.create(Net(rngs=nnx.Rngs(0, dropout=1)), ADAM)
    step = train.make_train_step(MSE)
    x, y = jnp.ones((5, 3)) * jnp.arange(5.0)[:, None], jnp.ones((5, 1))
    for _ in range(steps):
        state, _ = step(state, x, y)
    return state


def _assert_bitwise(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b) and len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(x) == jax.random.key_impl(y)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_of_the_full_state_is_bitwise(tmp_path):
    state = _trained_state()
    path = checkpoint.save_checkpoint(tmp_path / "ck", state, step=int(state.step), metadata={"epoch": 3})
    assert os.path.isdir(path) and path.endswith(os.sep + "3")
    template = train.TrainState.create(Net(rngs=nnx.Rngs(5, dropout=6)), ADAM)
    restored = train.restore_checkpoint(tmp_path / "ck", template=template)
    _assert_bitwise(restored, state)  # params, BatchNorm stats, RNG key + count, Adam moments, step
    assert int(restored.rest["bn"]["num_batches_tracked"][...]) == 3
    assert checkpoint.checkpoint_metadata(tmp_path / "ck") == {"epoch": 3}
    # The restored state keeps training exactly like the original.
    step = train.make_train_step(MSE)
    x, y = jnp.ones((5, 3)) * jnp.arange(5.0)[:, None], jnp.ones((5, 1))
    _assert_bitwise(step(restored, x, y), step(state, x, y))


def test_frozen_parameters_round_trip_and_fit_resumes_with_them(tmp_path):
    def frozen_net():
        net = Net(rngs=nnx.Rngs(0, dropout=1))
        layers.freeze(net.fc)
        return net

    x, y = jnp.ones((6, 3)) * jnp.arange(6.0)[:, None], jnp.ones((6, 1))
    common = dict(batch_size=2, verbose=False, fused=False)
    straight = train.fit(frozen_net(), ADAM, MSE, x, y, epochs=4, **common)
    train.fit(frozen_net(), ADAM, MSE, x, y, epochs=2, checkpoint_dir=str(tmp_path / "ck"), **common)
    resumed = train.fit(frozen_net(), ADAM, MSE, x, y, epochs=4, resume_from=str(tmp_path / "ck"), **common)
    _assert_bitwise(resumed.state, straight.state)
    assert sorted(resumed.state.frozen) == ["fc"]  # the frozen layer is saved and restored, untouched
    _assert_bitwise(resumed.state.frozen["fc"], train.TrainState.create(frozen_net(), ADAM).frozen["fc"])
    assert layers.is_frozen(None, train.to_module(resumed.state).fc.kernel)


def test_keep_last_n_and_step_selection(tmp_path):
    state = _trained_state(1)
    for s in (1, 2, 3, 4):
        checkpoint.save_checkpoint(
            tmp_path, state.replace(step=jnp.asarray(s, jnp.int32)), step=s, keep=2, metadata={"s": s}
        )
    assert checkpoint.all_steps(tmp_path) == [3, 4] and checkpoint.latest_step(tmp_path) == 4
    restored = checkpoint.restore_checkpoint(tmp_path, template=state, step=3)
    assert int(restored.step) == 3 and checkpoint.checkpoint_metadata(tmp_path, step=3) == {"s": 3}


def test_a_failed_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    state = _trained_state(1)
    checkpoint.save_checkpoint(tmp_path, state, step=1)
    # A save that fails midway (the metadata cannot be serialised after the arrays are written).
    with pytest.raises(TypeError):
        checkpoint.save_checkpoint(tmp_path, state, step=2, metadata={"bad": object()})
    # A crash mid-write leaves orbax's temporary directory behind: it is never taken for a checkpoint.
    (tmp_path / "3.orbax-checkpoint-tmp-1234").mkdir()
    (tmp_path / "3.orbax-checkpoint-tmp-1234" / "junk").write_text("partial")
    assert checkpoint.all_steps(tmp_path) == [1]
    _assert_bitwise(checkpoint.restore_checkpoint(tmp_path, template=state), state)


def test_orbax_is_imported_lazily():
    code = "import sys, fnml.train; print(any(m.startswith('orbax') for m in sys.modules))"
    completed = run_python(["-c", code], timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip() == "False"


def test_fit_writes_periodic_checkpoints_with_resume_metadata(tmp_path):
    X, Y = np.ones((6, 3), np.float32), np.zeros((6, 1), np.float32)
    model = Net(rngs=nnx.Rngs(0, dropout=1))
    train.fit(
        model,
        ADAM,
        MSE,
        X,
        Y,
        epochs=4,
        batch_size=3,
        shuffle=True,
        key=jax.random.key(2),
        checkpoint_dir=str(tmp_path),
        checkpoint_every=2,
        checkpoint_keep=5,
        verbose=False,
    )
    assert checkpoint.all_steps(tmp_path) == [4, 8]
    meta = checkpoint.checkpoint_metadata(tmp_path)
    assert meta["epoch"] == 4 and len(meta["losses"]) == 8
    assert meta["data_key"] == [int(v) for v in np.asarray(jax.random.key_data(jax.random.key(2)))]
    json.dumps(meta)


def test_checkpoint_errors(tmp_path):
    state = _trained_state(1)
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"checkpoint directory '{missing}' does not exist"):
        checkpoint.restore_checkpoint(missing, template=state)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"'{empty}' is not a checkpoint directory"):
        checkpoint.restore_checkpoint(empty, template=state)
    checkpoint.save_checkpoint(tmp_path / "ck", state, step=1)
    with pytest.raises(ValueError, match="step 7 is not in .*available steps: \\[1\\]"):
        checkpoint.restore_checkpoint(tmp_path / "ck", template=state, step=7)
    with pytest.raises(ValueError, match="step 1 already exists"):
        checkpoint.save_checkpoint(tmp_path / "ck", state, step=1)
    with pytest.raises(ValueError, match="step must be a non-negative integer, got step=-1"):
        checkpoint.save_checkpoint(tmp_path / "ck", state, step=-1)
    with pytest.raises(ValueError, match="keep must be a positive integer or None, got keep=0"):
        checkpoint.save_checkpoint(tmp_path / "ck", state, step=2, keep=0)
    other = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), ADAM)
    with pytest.raises(ValueError, match="does not match the template"):
        checkpoint.restore_checkpoint(tmp_path / "ck", template=other)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.checkpoint_metadata(missing)
