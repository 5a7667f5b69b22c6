"""Crash-safe training: SIGKILL at random moments, corrupt checkpoints, Ctrl-C, safe loading, NaN guards.

- ``test_sigkill_at_random_moments_always_leaves_a_restorable_checkpoint``: a training subprocess
  (``fit`` with a checkpoint every epoch, keep-last-2, resuming from the directory when it holds one) is
  killed with SIGKILL at seeded random delays, many times (kills land during training steps and during
  orbax writes); after every kill the newest verified checkpoint restores, and the run that finally
  completes has bitwise the parameters of an uninterrupted run.
- Truncated / altered checkpoint files are detected by the manifest and the previous good step is used.
- SIGINT during ``fit``: the state at the last chunk boundary is saved, then KeyboardInterrupt re-raised.
- Safe loading: a pickle payload that would create a file, put where every reader looks.
- ``check_finite``: the first non-finite gradient / parameter is named with the step.

Children signal readiness by printing a line (``READY``, ``PAUSED 3``); deadlines only bound a hang and scale
with ``$FNML_TEST_TIMEOUT_SCALE`` (``helpers.deadline``); every child is ended and its pipe closed in ``finally``
(``helpers.finish``). The module's tests share one uninterrupted reference run (``make test`` sends a whole
module to one xdist worker).
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # noqa: F401  (the suite requires torch)
from flax import nnx
from helpers import deadline, finish, spawn_python, wait_for_line

from fnml import checkpoint, interop, layers, losses, optim, train

# The training run of the subprocess tests (also importable in this process for templates).
TRAINER = textwrap.dedent(
    """
    import os, signal, sys, time
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # Ctrl-C is KeyboardInterrupt even where the parent was started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import jax, numpy as np
    from flax import nnx
    from fnml import checkpoint, interop, layers, losses, optim, train

    def build():
        return layers.Sequential(layers.Linear(4, 16, rngs=nnx.Rngs(0)), layers.ReLU(),
                                 layers.Dropout(0.2, rngs=nnx.Rngs(dropout=1)),
                                 layers.Linear(16, 1, rngs=nnx.Rngs(2)))

    TX, LOSS = optim.adam(lr=1e-2), losses.MSELoss()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(np.float32)
    Y = (X.sum(axis=1, keepdims=True) > 0).astype(np.float32)

    class PauseAt(train.Callback):
        # At the end of epoch `epoch`: say so, then wait for the parent's signal (a known point).

        def __init__(self, epoch):
            self.epoch = epoch

        def on_epoch_end(self, epoch, logs, state):
            if epoch == self.epoch:
                print(f"PAUSED {epoch}", flush=True)
                # Until the parent's SIGINT raises KeyboardInterrupt here. Short sleeps, not one long one: the
                # kernel may deliver the signal to another of the process's threads (XLA's, orbax's); the main
                # thread then runs Python's handler only when it next wakes, and a long sleep would hang.
                while True:
                    time.sleep(0.05)

    if __name__ == "__main__":
        ckpt, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
        pause = [PauseAt(int(sys.argv[4]))] if len(sys.argv) > 4 else []
        resume = ckpt if os.path.isdir(ckpt) and train.latest_step_or_none(ckpt) is not None else None
        print("READY", flush=True)
        try:
            result = train.fit(build(), TX, LOSS, X, Y, epochs=epochs, batch_size=16, shuffle=True,
                               key=jax.random.key(3), checkpoint_dir=ckpt if ckpt != "-" else None,
                               checkpoint_every=1 if ckpt != "-" else None, checkpoint_keep=2,
                               resume_from=resume, callbacks=pause, verbose=False)
        except KeyboardInterrupt:
            print("KeyboardInterrupt re-raised by fit", flush=True)
            sys.exit(3)
        np.savez(out, **{k: np.asarray(v) for k, v in interop.state_dict(result.model).items()})
        print("DONE", flush=True)
    """
)
EPOCHS = 24


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    path = tmp_path_factory.mktemp("trainer") / "trainer.py"
    path.write_text(TRAINER)
    return str(path)


def _spawn(trainer, ckpt, out, epochs=EPOCHS, pause_at_epoch=None):
    pause = [] if pause_at_epoch is None else [str(pause_at_epoch)]
    # jax's defaults in the child (float32), as a user's training script runs
    return spawn_python([trainer, str(ckpt), str(out), str(epochs), *pause])


@pytest.fixture(scope="module")
def reference(trainer, tmp_path_factory):
    """Parameters of the uninterrupted run (no checkpoints at all), shared by the interrupted runs."""
    out = tmp_path_factory.mktemp("reference") / "reference.npz"
    process = _spawn(trainer, "-", out)
    log = finish(process)
    assert process.returncode == 0, log
    return dict(np.load(out))


def _template():
    namespace = {"__name__": "trainer_module"}
    exec(compile(TRAINER, "trainer.py", "exec"), namespace)  # the same build() / TX as the subprocess
    return train.TrainState.create(namespace["build"](), namespace["TX"])


def _assert_same_params(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# --------------------------------------------------------------------------------------------------
# SIGKILL at random moments
# --------------------------------------------------------------------------------------------------

KILLS = 5


def _step_dirs(ckpt):
    """Names of committed step directories (orbax renames a finished temporary directory to the step)."""
    return {name for name in os.listdir(ckpt) if name.isdigit()} if os.path.isdir(ckpt) else set()


def test_sigkill_at_random_moments_always_leaves_a_restorable_checkpoint(trainer, reference, tmp_path):
    ckpt, out = tmp_path / "ckpt", tmp_path / "resumed.npz"
    template = _template()
    rng = random.Random(1234)
    outcomes = []
    for kill in range(KILLS):
        before = _step_dirs(ckpt)
        process = _spawn(trainer, ckpt, out)
        try:
            wait_for_line(process, "READY")
            # Kill only once this run has made progress (a NEW checkpoint committed), then at a random moment
            # after it: most of a run's time is spent writing the next checkpoints, so many kills land
            # mid-write. The wait is for an event; its deadline only bounds a hang.
            hang = time.monotonic() + deadline(300)
            while _step_dirs(ckpt) <= before and process.poll() is None and time.monotonic() < hang:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))
            finished = process.poll() is not None
            if not finished:
                os.kill(process.pid, signal.SIGKILL)
        finally:
            finish(process)
        if finished:
            outcomes.append("finished before the kill")
            break
        leftovers = [name for name in os.listdir(ckpt) if "tmp" in name] if ckpt.is_dir() else []
        steps = checkpoint.all_steps(ckpt) if ckpt.is_dir() else []
        if steps:
            good = checkpoint.latest_valid_step(ckpt)
            restored = checkpoint.restore_checkpoint(ckpt, template=template, step=good)
            assert int(restored.step) == good
            meta = checkpoint.checkpoint_metadata(ckpt, step=good)
            assert len(meta["losses"]) == good
        outcomes.append(f"kill {kill}: steps {steps}" + (f", partial write left {leftovers}" if leftovers else ""))
    # finally let it run to the end (resuming from whatever the kills left)
    process = _spawn(trainer, ckpt, out)
    log = finish(process)
    assert process.returncode == 0, log
    _assert_same_params(dict(np.load(out)), reference)
    print("\n".join(outcomes))
    # the property was exercised: several kills left committed checkpoints behind to restore
    assert sum("steps [" in o and "steps []" not in o for o in outcomes) >= 3, outcomes


# --------------------------------------------------------------------------------------------------
# corrupt checkpoints
# --------------------------------------------------------------------------------------------------


def _fit_in_process(ckpt, epochs, resume=False):
    namespace = {"__name__": "trainer_module"}
    exec(compile(TRAINER, "trainer.py", "exec"), namespace)
    return train.fit(
        namespace["build"](),
        namespace["TX"],
        namespace["LOSS"],
        namespace["X"],
        namespace["Y"],
        epochs=epochs,
        batch_size=16,
        shuffle=True,
        key=jax.random.key(3),
        checkpoint_dir=str(ckpt),
        checkpoint_every=1,
        checkpoint_keep=3,
        resume_from=str(ckpt) if resume else None,
        verbose=False,
    )


def _largest_file(step_dir):
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs if f != checkpoint.MANIFEST]
    return max(files, key=os.path.getsize)


@pytest.mark.parametrize("damage", ["truncate", "flip-byte", "delete", "manifest"])
def test_a_corrupt_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, damage):
    full = _fit_in_process(tmp_path / "full", 4)
    _fit_in_process(tmp_path / "ck", 3)
    newest = tmp_path / "ck" / str(checkpoint.latest_step(tmp_path / "ck"))
    victim = _largest_file(newest)
    if damage == "truncate":
        with open(victim, "r+b") as handle:
            handle.truncate(os.path.getsize(victim) // 2)
    elif damage == "flip-byte":
        with open(victim, "r+b") as handle:
            handle.seek(os.path.getsize(victim) // 2)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "delete":
        os.remove(victim)
    else:
        (newest / checkpoint.MANIFEST).write_text("{not json")
    expected = {
        "truncate": "truncated or altered",
        "flip-byte": "altered",
        "delete": "is missing",
        "manifest": "unreadable manifest",
    }[damage]
    with pytest.raises(checkpoint.CorruptCheckpointError, match=expected):
        checkpoint.verify_checkpoint(tmp_path / "ck", step=int(newest.name))
    with pytest.warns(checkpoint.CorruptCheckpointWarning, match=expected):
        assert checkpoint.latest_valid_step(tmp_path / "ck") == int(newest.name) - 4  # one epoch = 4 steps
    # an explicit request for the corrupt step raises instead of silently loading something else
    with pytest.raises(checkpoint.CorruptCheckpointError, match=expected):
        checkpoint.checkpoint_metadata(tmp_path / "ck", step=int(newest.name))
    # resuming skips the corrupt step (warning), redoes that epoch, and ends bitwise where the full run ends
    with pytest.warns(checkpoint.CorruptCheckpointWarning):
        resumed = _fit_in_process(tmp_path / "ck", 4, resume=True)
    for a, b in zip(jax.tree.leaves(resumed.state.params), jax.tree.leaves(full.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_every_step_corrupt_raises_naming_the_directory(tmp_path):
    state = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=0.1))
    checkpoint.save_checkpoint(tmp_path, state, step=1)
    victim = _largest_file(tmp_path / "1")
    with open(victim, "r+b") as handle:
        handle.truncate(1)
    with (
        pytest.warns(checkpoint.CorruptCheckpointWarning),
        pytest.raises(checkpoint.CorruptCheckpointError, match="every checkpoint step in .* is corrupt"),
    ):
        checkpoint.restore_checkpoint(tmp_path, template=state)


# --------------------------------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------------------------------


def test_sigint_saves_a_checkpoint_reraises_and_the_resume_is_bitwise(trainer, reference, tmp_path):
    """A real SIGINT from outside, at a known point: the child pauses in a callback at the end of epoch 3."""
    pause_at = 3
    ckpt, out = tmp_path / "ckpt", tmp_path / "out.npz"
    process = _spawn(trainer, ckpt, out, pause_at_epoch=pause_at)
    try:
        wait_for_line(process, f"PAUSED {pause_at}")  # the child waits for the signal now
        os.kill(process.pid, signal.SIGINT)
    finally:
        log = finish(process)
    assert process.returncode == 3, log
    assert "KeyboardInterrupt re-raised by fit" in log
    # The callback runs before its epoch's checkpoint: epochs 1-2 were checkpointed, and the interrupt
    # saves the last chunk boundary, the end of epoch 2 (4 steps per epoch).
    good = checkpoint.latest_valid_step(ckpt)
    assert checkpoint.checkpoint_metadata(ckpt, step=good)["epoch"] * 4 == good
    assert good == (pause_at - 1) * 4
    process = _spawn(trainer, ckpt, out)
    log = finish(process)
    assert process.returncode == 0, log
    _assert_same_params(dict(np.load(out)), reference)


def test_keyboard_interrupt_in_process_saves_the_chunk_boundary(tmp_path):
    """A callback raising KeyboardInterrupt in epoch 3: the epoch-2 state is saved, then it propagates."""

    class CtrlC(train.Callback):
        def on_epoch_end(self, epoch, logs, state):
            if epoch == 3:
                raise KeyboardInterrupt

    namespace = {"__name__": "trainer_module"}
    exec(compile(TRAINER, "trainer.py", "exec"), namespace)
    with pytest.raises(KeyboardInterrupt):
        train.fit(
            namespace["build"](),
            namespace["TX"],
            namespace["LOSS"],
            namespace["X"],
            namespace["Y"],
            epochs=5,
            batch_size=16,
            checkpoint_dir=str(tmp_path),
            callbacks=[CtrlC()],
            verbose=False,
        )
    assert checkpoint.all_steps(tmp_path) == [8]
    assert checkpoint.checkpoint_metadata(tmp_path)["epoch"] == 2


# --------------------------------------------------------------------------------------------------
# safe loading
# --------------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this creates ``self.path`` (through builtins.open): proof that a pickle was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _pickle_bytes(marker):
    return pickle.dumps({"weight": _Payload(marker)})


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth", ".bin"])
def test_weight_files_never_unpickle(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(_pickle_bytes(marker))
    expected = "could not read safetensors file" if suffix == ".safetensors" else "refusing to load"
    with pytest.raises((ValueError, interop.StateDictError), match=expected) as info:
        interop.load_state_dict(layers.Linear(1, 1, rngs=nnx.Rngs(0)), str(path))
    assert not marker.exists(), f"{suffix}: a pickle was executed"
    assert str(path) in str(info.value)
    if suffix == ".safetensors":
        with pytest.raises(ValueError, match="the file is truncated or corrupted"):
            interop.load_safetensors(path)
        assert not marker.exists()


@pytest.mark.parametrize("with_manifest", [True, False])
def test_checkpoint_restore_never_unpickles(tmp_path, with_manifest):
    """Every file of a saved step replaced by a pickle payload: detected (manifest) or refused; never run."""
    marker = tmp_path / "pwned"
    state = train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=0.1))
    checkpoint.save_checkpoint(tmp_path / "ck", state, step=1, metadata={"epoch": 1})
    step_dir = tmp_path / "ck" / "1"
    for root, _, files in os.walk(step_dir):
        for name in files:
            if name != checkpoint.MANIFEST:
                with open(os.path.join(root, name), "wb") as handle:
                    handle.write(_pickle_bytes(marker))
    if not with_manifest:
        os.remove(step_dir / checkpoint.MANIFEST)
    for read in (
        lambda: checkpoint.restore_checkpoint(tmp_path / "ck", template=state, step=1),
        lambda: checkpoint.checkpoint_metadata(tmp_path / "ck", step=1),
    ):
        with pytest.raises(checkpoint.CorruptCheckpointError, match="altered|cannot be read"):
            read()
        assert not marker.exists(), "a pickle inside a checkpoint was executed"


# --------------------------------------------------------------------------------------------------
# numerical guards
# --------------------------------------------------------------------------------------------------


def _sqrt_loss(output, target):
    """d sqrt(u)/du at u = 0 is inf: the loss stays finite, the gradients do not."""
    return jnp.mean(jnp.sqrt(jnp.abs(output - target)))


SQRT_LOSS = _sqrt_loss


def test_check_finite_names_the_first_nonfinite_gradient_and_the_step():
    model = layers.SimpleNN(rngs=nnx.Rngs(0))
    state = train.TrainState.create(model, optim.sgd(lr=0.1))
    step = train.make_train_step(SQRT_LOSS, check_finite=True)
    x = jnp.ones((3, 2))
    good_y = model(x) + 1.0
    state, _ = step(state, x, good_y)  # finite
    target = train.TrainState.model(state)(x)  # output == target exactly: sqrt'(0) = inf
    with pytest.raises(train.NonFiniteError, match=r"step 2: the gradient of 'fc2\.bias' is non-finite") as info:
        step(state, x, target)
    assert info.value.step == 2 and info.value.kind == "gradient" and info.value.name == "fc2.bias"
    assert int(info.value.state.step) == 1  # the state before the bad step
    # the default step does not check: non-finite parameters come back silently (torch without anomaly mode)
    plain = train.make_train_step(SQRT_LOSS)
    new_state, loss = plain(state, x, target)
    assert np.isfinite(float(loss)) and not np.isfinite(np.asarray(new_state.params["fc2"]["bias"][...])).all()


def test_check_finite_names_a_parameter_that_overflows_and_fit_passes_it_through():
    X = np.full((4, 2), 1e19, np.float32)
    Y = np.zeros((4, 1), np.float32)
    with pytest.raises(train.NonFiniteError, match=r"step 1: .*'fc\d\.(weight|bias)'") as info:
        train.fit(
            layers.SimpleNN(rngs=nnx.Rngs(0)),
            optim.sgd(lr=1e30),
            losses.MSELoss(),
            X,
            Y,
            epochs=3,
            check_finite=True,
            verbose=False,
        )
    assert info.value.step == 1 and info.value.kind in ("gradient", "parameter", "loss")
    with pytest.raises(TypeError, match=r"check_finite must be a bool \(True or False\), got 'yes' \(str\)"):
        train.make_train_step(losses.MSELoss(), check_finite="yes")
