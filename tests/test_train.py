"""fnml.train against hand-written torch loops: the tutorial loop, mini-batches + BatchNorm, fused, resume."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from helpers import cache_size, jax_dtype, max_abs_diff, one_torch_thread, tolerance

from fnml import _fit as fit_pipeline
from fnml import data, layers, losses, optim, train


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():  # torch on tiny tensors: its thread pool only costs (helpers.one_torch_thread)
        yield


# One criterion object for the whole module: fit memoises its jitted steps per criterion, so tests
# that train the same architecture share compilations.
MSE = losses.MSELoss()
ADAM = optim.adam(lr=1e-2)  # likewise: the optimizer is static in the TrainState (same object, same compile)
SGD = optim.sgd(lr=0.1)
LINE = re.compile(r"^Epoch \[(\d+)/(\d+)\], Loss: (\d+\.\d{4})$")


class TorchSimpleNN(torch.nn.Module):
    """The tutorial's model, verbatim."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(2, 2)
        self.fc2 = torch.nn.Linear(2, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _tutorial_torch(torch_dtype, epochs=100):
    """The tutorial's loop; returns (model before training state_dict, X, Y, per-step losses, printed lines, model)."""
    model = TorchSimpleNN().to(torch_dtype)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    criterion = torch.nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    X = torch.randn(10, 2, dtype=torch_dtype)
    Y = torch.randn(10, 1, dtype=torch_dtype)
    step_losses, printed = [], []
    for epoch in range(epochs):
        optimizer.zero_grad()
        output = model(X)
        loss = criterion(output, Y)
        loss.backward()
        optimizer.step()
        step_losses.append(loss.item())
        if (epoch + 1) % 10 == 0:
            printed.append(f"Epoch [{epoch + 1}/{epochs}], Loss: {loss.item():.4f}")
    return initial, X, Y, np.array(step_losses), printed, model


def _variable(model, name):
    """fnml variable and layout flag for a torch state_dict name (the layer attribute contract)."""
    *path, leaf = name.split(".")
    module = model
    for part in path:
        module = getattr(module, part)
    transpose = leaf == "weight" and isinstance(module, layers.Linear)
    return getattr(module, "kernel" if transpose else leaf), transpose


# Not helpers.copy_torch_weights: its arrays share the torch tensors' memory, and torch trains in place here.
def _load(model, state_dict):
    """Copy torch tensors into the fnml model: Linear kernel = weight.T (torch (out, in) -> (in, out))."""
    for name, tensor in state_dict.items():
        variable, transpose = _variable(model, name)
        value = tensor.detach().numpy().copy()  # a copy: jax may alias numpy memory, torch updates in place
        variable[...] = jnp.asarray(value.T if transpose else value, dtype=variable[...].dtype)
    return model


_SIMPLE_NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
_BN_NAMES = (
    *_SIMPLE_NAMES[:2],
    "bn.weight",
    "bn.bias",
    "bn.running_mean",
    "bn.running_var",
    "bn.num_batches_tracked",
    "fc2.weight",
    "fc2.bias",
)


def _params_sd(model, names=_SIMPLE_NAMES):
    """The fnml model's values under torch names, in torch layout."""
    out = {}
    for name in names:
        variable, transpose = _variable(model, name)
        value = np.asarray(variable[...])
        out[name] = value.T if transpose else value
    return out


def _fnml_simple(initial, dtype):
    model = layers.SimpleNN(param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0))
    return _load(model, initial)


def _torch_sd(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


# ---- the tutorial loop ------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_tutorial_loop_matches_torch_per_step(dtype, torch_dtype, fused, capsys):
    initial, X, Y, torch_losses, torch_lines, torch_model = _tutorial_torch(torch_dtype)
    model = _fnml_simple(initial, dtype)
    result = train.fit(model, optim.adam(lr=0.001), MSE, X.numpy(), Y.numpy(), epochs=100, fused=fused)
    printed = capsys.readouterr().out.splitlines()
    assert result.losses.shape == (100,)
    tol = tolerance(dtype)["atol"]
    assert np.max(np.abs(result.losses - torch_losses)) <= tol
    assert max_abs_diff(_params_sd(result.model), _torch_sd(torch_model)) <= (
        tol if dtype == "float64" else tolerance("float32_trajectory")["atol"]
    )
    # The printed lines: the tutorial's exact format, the last step's loss of each 10th epoch.
    assert len(printed) == 10 and all(LINE.match(line) for line in printed)
    assert printed == [f"Epoch [{e}/100], Loss: {result.losses[e - 1]:.4f}" for e in range(10, 101, 10)]
    if dtype == "float64":
        assert printed == torch_lines


def test_fit_does_not_modify_the_input_model():
    initial, X, Y, *_ = _tutorial_torch(torch.float64, epochs=1)
    model = _fnml_simple(initial, "float64")
    before = _params_sd(model)
    result = train.fit(model, optim.adam(lr=0.1), MSE, X.numpy(), Y.numpy(), epochs=5, verbose=False, donate=True)
    assert max_abs_diff(_params_sd(model), before) == 0.0
    assert max_abs_diff(_params_sd(result.model), before) > 0.0
    np.testing.assert_array_equal(np.asarray(model(X.numpy())), np.asarray(_fnml_simple(initial, "float64")(X.numpy())))


def test_split_once_step_does_not_recompile():
    model = layers.SimpleNN(rngs=nnx.Rngs(0))
    X = jnp.ones((10, 2), jnp.float32)
    Y = jnp.zeros((10, 1), jnp.float32)
    step = train.make_train_step(MSE)
    evaluate = train.make_eval_step(MSE)
    state = train.TrainState.create(model, optim.adam(lr=1e-3))
    for _ in range(5):
        state, loss = step(state, X, Y)
        evaluate(state, X, Y)
    assert cache_size(step) == 1 and cache_size(evaluate) == 1
    assert int(state.step) == 5 and loss.dtype == jnp.float32
    # The state is a pytree with a static graph definition: it round-trips through tree ops.
    leaves, treedef = jax.tree.flatten(state)
    assert jax.tree.unflatten(treedef, leaves).graphdef == state.graphdef
    assert train.to_module(state).fc1.kernel.shape == (2, 2)


# ---- mini-batches, shuffling, BatchNorm against a hand-written torch loop ---------------------


class TorchBNNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(3, 8)
        self.bn = torch.nn.BatchNorm1d(8)
        self.drop = torch.nn.Dropout(0.0)
        self.fc2 = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


class BNNet(nnx.Module):
    def __init__(self, *, p=0.0, param_dtype=jnp.float32, rngs):
        self.fc1 = layers.Linear(3, 8, param_dtype=param_dtype, rngs=rngs)
        self.bn = layers.BatchNorm1d(8, param_dtype=param_dtype)
        self.drop = layers.Dropout(p, rngs=rngs)
        self.fc2 = layers.Linear(8, 1, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x):
        return self.fc2(self.drop(jax.nn.relu(self.bn(self.fc1(x)))))


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_minibatch_shuffle_batchnorm_matches_torch(dtype, torch_dtype, fused):
    n, batch_size, epochs, key = 22, 6, 3, jax.random.key(11)  # 4 batches per epoch, the last of 4
    torch_model = TorchBNNet().to(torch_dtype)
    model = _load(BNNet(param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0)), torch_model.state_dict())
    X = torch.randn(n, 3, dtype=torch_dtype)
    Y = torch.randn(n, 1, dtype=torch_dtype)
    X_val, Y_val = torch.randn(5, 3, dtype=torch_dtype), torch.randn(5, 1, dtype=torch_dtype)

    optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.05, momentum=0.9)
    criterion = torch.nn.MSELoss()
    torch_losses, torch_val = [], []
    for epoch in range(epochs):
        torch_model.train()
        # The same batches as fnml's: the order comes from fnml.data.
        for index in data.batch_indices(n, batch_size, shuffle=True, key=key, epoch=epoch):
            index = torch.as_tensor(np.asarray(index))
            optimizer.zero_grad()
            loss = criterion(torch_model(X[index]), Y[index])
            loss.backward()
            optimizer.step()
            torch_losses.append(loss.item())
        torch_model.eval()
        with torch.no_grad():
            torch_val.append(criterion(torch_model(X_val), Y_val).item())

    result = train.fit(
        model,
        optim.sgd(lr=0.05, momentum=0.9),
        MSE,
        X.numpy(),
        Y.numpy(),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        key=key,
        validation=(X_val.numpy(), Y_val.numpy()),
        fused=fused,
        verbose=False,
    )
    tol = tolerance(dtype)["atol"]
    assert result.losses.shape == (epochs * 4,)
    assert np.max(np.abs(result.losses - np.array(torch_losses))) <= tol
    assert np.max(np.abs(result.history["val_loss"] - np.array(torch_val))) <= tol
    # Parameters AND BatchNorm buffers (running stats, num_batches_tracked).
    assert max_abs_diff(_params_sd(result.model, _BN_NAMES), _torch_sd(torch_model)) <= tol
    assert int(result.model.bn.num_batches_tracked[...]) == epochs * 4


# ---- fused == unfused ---------------------------------------------------------------------------


FUSED_CASES = {
    "full-batch": dict(batch_size=None, shuffle=False),
    "minibatch-shuffle-remainder": dict(batch_size=4, shuffle=True, key=jax.random.key(5)),
    "minibatch-drop-last-dropout": dict(batch_size=4, shuffle=True, drop_last=True, key=jax.random.key(6)),
}


@pytest.mark.parametrize("case", list(FUSED_CASES), ids=list(FUSED_CASES))
def test_fused_equals_unfused_float32(case):
    kwargs = FUSED_CASES[case]
    p = 0.3 if "dropout" in case else 0.0
    X = jax.random.normal(jax.random.key(1), (18, 3), jnp.float32)
    Y = jax.random.normal(jax.random.key(2), (18, 1), jnp.float32)
    runs = {}
    for fused in (False, True):
        model = BNNet(p=p, rngs=nnx.Rngs(0, dropout=3))
        runs[fused] = train.fit(model, ADAM, MSE, X, Y, epochs=7, log_every=3, fused=fused, verbose=False, **kwargs)
    assert runs[False].losses.shape == runs[True].losses.shape
    assert np.max(np.abs(runs[False].losses - runs[True].losses)) <= 1e-6
    assert max_abs_diff(_params_sd(runs[False].model, _BN_NAMES), _params_sd(runs[True].model, _BN_NAMES)) <= 1e-6


def test_fused_auto_rule():
    class ConvNet(nnx.Module):
        def __init__(self, rngs):
            self.conv = layers.Conv2d(1, 2, 3, rngs=rngs)

    assert fit_pipeline._choose_fused("auto", layers.SimpleNN(rngs=nnx.Rngs(0)), 10)
    assert not fit_pipeline._choose_fused("auto", layers.SimpleNN(rngs=nnx.Rngs(0)), 1)
    conv = ConvNet(nnx.Rngs(0))
    assert fit_pipeline._choose_fused("auto", conv, 10) == (jax.default_backend() != "cpu")
    assert fit_pipeline._choose_fused(True, conv, 10)


# ---- resume == uninterrupted (bitwise) -----------------------------------------------------------


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_resume_is_bitwise_identical(tmp_path, fused):
    X = jax.random.normal(jax.random.key(1), (18, 3), jnp.float32)
    Y = jax.random.normal(jax.random.key(2), (18, 1), jnp.float32)
    common = dict(
        batch_size=4, shuffle=True, drop_last=True, key=jax.random.key(9), fused=fused, verbose=False, log_every=2
    )

    def new_model():  # the architecture of test_fused_equals_unfused_float32: compilations are shared
        return BNNet(p=0.3, rngs=nnx.Rngs(0, dropout=1))

    straight = train.fit(new_model(), ADAM, MSE, X, Y, epochs=10, **common)
    train.fit(
        new_model(), ADAM, MSE, X, Y, epochs=5, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=5, **common
    )
    resumed = train.fit(new_model(), ADAM, MSE, X, Y, epochs=10, resume_from=str(tmp_path / "ckpt"), **common)
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(straight.losses, resumed.losses)
    np.testing.assert_array_equal(straight.history["loss"], resumed.history["loss"])


def test_resume_rejects_a_different_data_key(tmp_path):
    X, Y = np.ones((6, 3), np.float32), np.ones((6, 1), np.float32)
    kw = dict(batch_size=2, shuffle=True, verbose=False)
    train.fit(
        BNNet(rngs=nnx.Rngs(0)), SGD, MSE, X, Y, epochs=1, key=jax.random.key(1), checkpoint_dir=str(tmp_path), **kw
    )
    with pytest.raises(ValueError, match="differs from the data-order key saved in"):
        train.fit(
            BNNet(rngs=nnx.Rngs(0)), SGD, MSE, X, Y, epochs=2, key=jax.random.key(2), resume_from=str(tmp_path), **kw
        )
    with pytest.raises(ValueError, match="is at epoch 1 > epochs=0|epochs must be a positive integer"):
        train.fit(
            BNNet(rngs=nnx.Rngs(0)), SGD, MSE, X, Y, epochs=0, key=jax.random.key(1), resume_from=str(tmp_path), **kw
        )


# ---- non-finite losses ---------------------------------------------------------------------------


def _nan_data():
    X = np.ones((8, 2))
    X[6, 0] = np.nan  # batch 4 (samples 6, 7) of the unshuffled epoch -> step 4 is NaN
    return X, np.zeros((8, 1))


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_nonfinite_loss_raises_naming_the_step_and_keeps_the_last_finite_state(fused):
    X, Y = _nan_data()
    model = layers.SimpleNN(param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    with pytest.raises(train.NonFiniteLossError, match="non-finite loss nan at step 4 \\(epoch 1/3\\)") as info:
        train.fit(model, SGD, MSE, X, Y, epochs=3, batch_size=2, fused=fused, verbose=False)
    error = info.value
    assert error.step == 4 and error.epoch == 1 and np.isnan(error.loss)
    assert error.result.losses.shape == (3,) and np.all(np.isfinite(error.result.losses))
    # The kept state is the state after step 3: replay 3 steps by hand.
    step = train.make_train_step(MSE)
    state = train.TrainState.create(model, SGD)
    for i in range(3):
        state, _ = step(state, X[2 * i : 2 * i + 2], Y[2 * i : 2 * i + 2])
    assert max_abs_diff(jax.tree.leaves(error.state.params), jax.tree.leaves(state.params)) == 0.0
    assert int(error.state.step) == 3


def test_nonfinite_stop_and_ignore():
    X, Y = _nan_data()
    kw = dict(epochs=2, batch_size=2, verbose=False)
    model = layers.SimpleNN(param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    stopped = train.fit(model, SGD, MSE, X, Y, on_nonfinite="stop", **kw)
    assert stopped.losses.shape == (3,) and "step 4" in stopped.stop_reason
    assert all(np.all(np.isfinite(np.asarray(v))) for v in jax.tree.leaves(stopped.state.params))
    ignored = train.fit(model, SGD, MSE, X, Y, on_nonfinite="ignore", **kw)
    assert ignored.losses.shape == (8,) and np.isnan(ignored.losses[3])


# ---- validation, metrics, early stopping, history, plot, progress --------------------------------


def test_validation_metrics_history_and_log_format(capsys, tmp_path):
    X = jax.random.normal(jax.random.key(1), (12, 2))
    Y = jax.random.normal(jax.random.key(2), (12, 1))
    model = layers.SimpleNN(param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    mae = lambda out, target: jnp.mean(jnp.abs(out - target))  # noqa: E731
    result = train.fit(model, ADAM, MSE, X, Y, epochs=4, log_every=2, validation=(X[:4], Y[:4]), metrics={"mae": mae})
    lines = capsys.readouterr().out.splitlines()
    h = result.history
    assert list(h["epoch"]) == [1, 2, 3, 4] and set(h) >= {"loss", "mean_loss", "val_loss", "val_mae"}
    assert lines == [
        f"Epoch [{e}/4], Loss: {h['loss'][e - 1]:.4f}, Val Loss: {h['val_loss'][e - 1]:.4f}, "
        f"Val mae: {h['val_mae'][e - 1]:.4f}"
        for e in (2, 4)
    ]
    evaluate = train.make_eval_step(MSE, metrics={"mae": mae})
    values = evaluate(result.state, X[:4], Y[:4])
    assert float(values["loss"]) == h["val_loss"][-1] and float(values["mae"]) == h["val_mae"][-1]
    path = result.plot(str(tmp_path / "loss.png"))
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_early_stopping_restores_the_best_state(capsys):
    X = jax.random.normal(jax.random.key(1), (16, 2))
    Y = jax.random.normal(jax.random.key(2), (16, 1))
    # Validating on the negated targets: as the model fits Y, the validation loss must eventually rise.
    stopper = train.EarlyStopping(patience=3)
    model = layers.SimpleNN(param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    result = train.fit(
        model,
        optim.adam(lr=0.05),
        MSE,
        X,
        Y,
        epochs=200,
        validation=(X, -Y),
        callbacks=[stopper],
        verbose=True,
        log_every=1000,
    )
    assert result.stop_reason is not None and "early stopping at epoch" in result.stop_reason
    assert "early stopping at epoch" in capsys.readouterr().out
    val = result.history["val_loss"]
    assert len(val) < 200 and len(val) == stopper.best_epoch + 3
    best = float(np.min(val))
    assert best == val[stopper.best_epoch - 1]
    evaluate = train.make_eval_step(MSE)
    assert float(evaluate(result.state, X, -Y)["loss"]) == best


def test_progress_bar_runs_and_keeps_the_log_lines(capsys):
    X, Y = np.ones((4, 2)), np.zeros((4, 1))
    train.fit(
        layers.SimpleNN(param_dtype=jnp.float64, rngs=nnx.Rngs(0)),
        optim.adam(lr=1e-3),
        MSE,
        X,
        Y,
        epochs=20,
        progress=True,
    )
    out = capsys.readouterr().out
    assert "Epoch [10/20], Loss:" in out and "Epoch [20/20], Loss:" in out


def test_donation_gives_the_same_losses():
    X = jax.random.normal(jax.random.key(1), (10, 2))
    Y = jax.random.normal(jax.random.key(2), (10, 1))
    runs = [
        train.fit(
            layers.SimpleNN(param_dtype=jnp.float64, rngs=nnx.Rngs(0)),
            ADAM,
            MSE,
            X,
            Y,
            epochs=6,
            verbose=False,
            donate=donate,
            fused=False,
        )
        for donate in (False, True)
    ]
    np.testing.assert_array_equal(runs[0].losses, runs[1].losses)


# ---- errors --------------------------------------------------------------------------------------


def _fit(**overrides):
    kwargs = dict(
        model=layers.SimpleNN(rngs=nnx.Rngs(0)),
        tx=optim.adam(lr=1e-3),
        criterion=MSE,
        X=np.ones((4, 2), np.float32),
        Y=np.ones((4, 1), np.float32),
        epochs=2,
        verbose=False,
    )
    kwargs.update(overrides)
    return train.fit(
        kwargs.pop("model"), kwargs.pop("tx"), kwargs.pop("criterion"), kwargs.pop("X"), kwargs.pop("Y"), **kwargs
    )


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"model": "not a module"}, TypeError, "fit: model must be a flax.nnx.Module, got str"),
        ({"criterion": 3}, TypeError, "criterion must be callable"),
        ({"tx": "adam"}, TypeError, "tx must be an optax.GradientTransformation"),
        ({"epochs": 0}, ValueError, "epochs must be a positive integer, got epochs=0"),
        ({"log_every": -1}, ValueError, "log_every must be a positive integer"),
        ({"on_nonfinite": "skip"}, ValueError, "on_nonfinite must be one of 'raise', 'stop', 'ignore'"),
        ({"fused": "yes"}, ValueError, "fused must be one of"),
        ({"Y": np.ones((5, 1))}, ValueError, "same number of samples.*\\[4, 5\\]"),
        ({"X": np.ones((0, 2)), "Y": np.ones((0, 1))}, ValueError, "the dataset is empty"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer"),
        ({"batch_size": 5, "drop_last": True}, ValueError, "batch_size=5 is larger than the dataset"),
        ({"batch_size": 2, "shuffle": True}, ValueError, "shuffle=True needs key"),
        ({"checkpoint_every": 1}, ValueError, "checkpoint_every=1 needs checkpoint_dir"),
        ({"validation": np.ones(3)}, ValueError, "validation must be a pair"),
        ({"callbacks": [object()]}, TypeError, "callbacks must be fnml.train.Callback objects"),
        ({"resume_from": "/nonexistent/ckpt"}, FileNotFoundError, "'/nonexistent/ckpt' does not exist"),
    ],
    ids=[
        "model",
        "criterion",
        "tx",
        "epochs",
        "log_every",
        "on_nonfinite",
        "fused",
        "xy-mismatch",
        "empty",
        "batch-size",
        "drop-last-too-large",
        "shuffle-no-key",
        "checkpoint-no-dir",
        "validation",
        "callback",
        "resume-missing",
    ],
)
def test_fit_errors(overrides, error, match):
    with pytest.raises(error, match=match):
        _fit(**overrides)


def test_step_and_callback_errors():
    with pytest.raises(TypeError, match="make_train_step: criterion must be callable"):
        train.make_train_step("mse")
    with pytest.raises(ValueError, match="give a criterion or at least one metric"):
        train.make_eval_step()
    with pytest.raises(TypeError, match="make_eval_step: acc must be callable"):
        train.make_eval_step(metrics={"acc": 1})
    with pytest.raises(TypeError, match="TrainState.create: model must be a flax.nnx.Module"):
        train.TrainState.create("model", optax.sgd(0.1))
    with pytest.raises(ValueError, match="EarlyStopping: patience must be a positive integer"):
        train.EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="min_delta must be a number >= 0"):
        train.EarlyStopping(min_delta=-1.0)
    with pytest.raises(ValueError, match="monitor='val_acc' is not among the epoch logs"):
        _fit(callbacks=[train.EarlyStopping(monitor="val_acc")])


def test_log_line_puts_the_validation_loss_before_metrics():
    # jax.device_get returns the metrics dict with sorted keys ("accuracy" < "loss"); the line keeps
    # the loss first, as a hand-written torch loop prints it.
    logs = {"loss": 0.5, "mean_loss": 0.6, "val_accuracy": 0.9, "val_loss": 0.25}
    line = fit_pipeline._format_line(3, 10, logs)
    assert line == "Epoch [3/10], Loss: 0.5000, Val Loss: 0.2500, Val accuracy: 0.9000"


# ---- the learning rate in fit's history and log ---------------------------------------------------


def test_fit_records_torchs_get_last_lr_each_epoch_and_prints_a_scheduled_one(capsys):
    """Warm-up + cosine per step (SequentialLR), 4 steps per epoch: history["lr"] after each epoch equals
    torch's ``scheduler.get_last_lr()[0]`` after that epoch's ``scheduler.step()`` calls."""
    from fnml import schedules

    steps_per_epoch, epochs, lr = 4, 5, 0.1
    schedule = schedules.sequential_lr(
        [schedules.linear_lr(lr, 0.1, 1.0, total_iters=6), schedules.cosine_annealing_lr(lr, T_max=14)],
        milestones=[6],
    )
    X = np.random.default_rng(0).standard_normal((16, 2))
    result = train.fit(
        layers.SimpleNN(rngs=nnx.Rngs(0)),
        optim.sgd(lr=schedule),
        MSE,
        X,
        X[:, :1],
        epochs=epochs,
        batch_size=4,
        log_every=1,
    )
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=lr)
    scheduler = torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [
            torch.optim.lr_scheduler.LinearLR(optimizer, 0.1, 1.0, total_iters=6),
            torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=14),
        ],
        milestones=[6],
    )
    expected = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            optimizer.step()
            scheduler.step()
        expected.append(scheduler.get_last_lr()[0])
    np.testing.assert_allclose(result.history["lr"], expected, rtol=1e-12, atol=0)
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"Epoch [5/5], Loss: {result.losses[-1]:.4f}, LR: {expected[-1]:.3g}"


def test_fit_records_a_constant_lr_and_each_param_groups_lr_without_printing_them(capsys):
    X = np.random.default_rng(0).standard_normal((8, 2))
    result = train.fit(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.adam(lr=0.01), MSE, X, X[:, :1], epochs=2, log_every=1)
    assert result.history["lr"] == pytest.approx([0.01, 0.01], rel=1e-12)
    assert all(LINE.match(line) for line in capsys.readouterr().out.splitlines())  # the tutorial's line, as is
    tx = optim.param_groups(
        {"body": optim.sgd(lr=0.01), "head": optim.sgd(lr=optim.step_lr(0.1, step_size=1, gamma=0.5))},
        labels=optim.label_by(lambda name, p: "head" if name.startswith("fc2") else "body"),
    )
    result = train.fit(layers.SimpleNN(rngs=nnx.Rngs(0)), tx, MSE, X, X[:, :1], epochs=2, batch_size=4, log_every=1)
    assert result.history["lr/body"] == pytest.approx([0.01, 0.01], rel=1e-12)
    assert result.history["lr/head"] == pytest.approx([0.1 * 0.5**2, 0.1 * 0.5**4], rel=1e-12)  # 2 steps/epoch
    assert capsys.readouterr().out.splitlines()[-1].endswith(", LR/body: 0.01, LR/head: 0.00625")


def test_fit_with_a_foreign_optimizer_records_no_lr():
    X = np.random.default_rng(0).standard_normal((8, 2))
    result = train.fit(layers.SimpleNN(rngs=nnx.Rngs(0)), optax.sgd(0.01), MSE, X, X[:, :1], epochs=1, verbose=False)
    assert "lr" not in result.history
