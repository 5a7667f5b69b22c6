"""Train/eval modes are the module's own, per submodule, in every training step: real torch side by side.

The rule (torch's): ``model.train(); model.backbone.eval()`` keeps the backbone's BatchNorm on its running
statistics (used, not updated) and its Dropout off while the rest trains. ``make_train_step``,
``parity.compare_training`` and ``fit(keep_modes=True)`` run the modes recorded in ``state.graphdef``;
``fit`` by default trains in training mode (torch's ``model.train()`` each epoch); validation and
``make_eval_step`` run in eval mode. All in float64, against torch computed here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers import cache_size, copy_torch_weights, max_abs_diff, one_torch_thread

from fnml import interop, layers, losses, optim, parity, train

# float64 side by side: the two frameworks' roundings differ by ~1e-15 per op; 1e-10 over 5 steps is the
# issue's bound and leaves room for nothing but rounding.
ATOL = 1e-10
STEPS = 5
# One criterion and one optimizer object per kind: jitted steps are memoised per object, so the tests
# that train the same architecture share compilations.
CE = losses.CrossEntropyLoss()
FNML_OPTIMIZERS = {
    "sgd": optim.sgd(lr=0.1, momentum=0.9),
    "adamw": optim.adamw(lr=0.05, weight_decay=0.1),
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():  # torch on tiny tensors: its thread pool only costs (helpers.one_torch_thread)
        yield


def _torch_optimizer(kind, params):
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9)
    return torch.optim.AdamW(params, lr=0.05, weight_decay=0.1)


# --------------------------------------------------------------------------------------------------
# The hand-written model: a backbone (Linear + BatchNorm + Dropout) and a head with its own BatchNorm
# --------------------------------------------------------------------------------------------------


class TorchBackbone(torch.nn.Module):
    def __init__(self, p):
        super().__init__()
        self.fc = torch.nn.Linear(4, 6)
        self.bn = torch.nn.BatchNorm1d(6)
        self.drop = torch.nn.Dropout(p)

    def forward(self, x):
        return self.drop(torch.relu(self.bn(self.fc(x))))


class TorchHead(torch.nn.Module):
    def __init__(self):
        super().__init__()
        # No bias before a training-mode BatchNorm: its true gradient is 0 and AdamW would turn the ~1e-17 of
        # rounding into lr-sized steps (torch's ResNets leave it out for the same reason).
        self.fc1 = torch.nn.Linear(6, 5, bias=False)
        self.bn = torch.nn.BatchNorm1d(5)
        self.fc2 = torch.nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class TorchNet(torch.nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.backbone = TorchBackbone(p)
        self.head = TorchHead()

    def forward(self, x):
        return self.head(self.backbone(x))


class Backbone(layers.Module):
    def __init__(self, p, *, rngs):
        self.fc = layers.Linear(4, 6, param_dtype=jnp.float64, rngs=rngs)
        self.bn = layers.BatchNorm1d(6, param_dtype=jnp.float64)
        self.drop = layers.Dropout(p, rngs=rngs)

    def __call__(self, x):
        return self.drop(jax.nn.relu(self.bn(self.fc(x))))


class Head(layers.Module):
    def __init__(self, *, rngs):
        self.fc1 = layers.Linear(6, 5, bias=False, param_dtype=jnp.float64, rngs=rngs)
        self.bn = layers.BatchNorm1d(5, param_dtype=jnp.float64)
        self.fc2 = layers.Linear(5, 3, param_dtype=jnp.float64, rngs=rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.relu(self.bn(self.fc1(x))))


class Net(layers.Module):
    def __init__(self, p=0.5, *, rngs):
        self.backbone = Backbone(p, rngs=rngs)
        self.head = Head(rngs=rngs)

    def __call__(self, x):
        return self.head(self.backbone(x))


def _pair(p=0.5, seed=0):
    """A float64 torch net with non-trivial BatchNorm buffers, and its fnml twin with the same tensors."""
    torch.manual_seed(seed)
    torch_model = TorchNet(p).double()
    with torch.no_grad():  # running statistics away from (0, 1), so using them is visible
        for bn in (torch_model.backbone.bn, torch_model.head.bn):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    model = Net(p, rngs=nnx.Rngs(0))
    copy_torch_weights(model, torch_model)
    return torch_model, model


def _data(n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), rng.integers(0, 3, size=n)


def _batches(steps=STEPS, rows=8):
    X, Y = _data(steps * rows)
    return [(X[i * rows : (i + 1) * rows], Y[i * rows : (i + 1) * rows]) for i in range(steps)]


def _finetune_modes(model):
    """The frozen-backbone recipe's modes, written the same way for both frameworks."""
    model.train()
    model.backbone.eval()
    return model


def _torch_steps(torch_model, optimizer, batches, set_modes=None):
    """torch's loop: ``zero_grad(); loss = criterion(model(x), y); loss.backward(); optimizer.step()``."""
    criterion = torch.nn.CrossEntropyLoss()
    out = []
    for x, y in batches:
        if set_modes is not None:
            set_modes(torch_model)
        optimizer.zero_grad()
        loss = criterion(torch_model(torch.as_tensor(x)), torch.as_tensor(y))
        loss.backward()
        optimizer.step()
        out.append(loss.item())
    return np.array(out)


def _torch_val_loss(torch_model, X, Y):
    torch_model.eval()
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(torch_model(torch.as_tensor(X)), torch.as_tensor(Y)).item()


def _state_dict_diff(fnml_model, torch_model):
    """max |fnml - torch| over every tensor of torch's state_dict (parameters AND BatchNorm buffers)."""
    expected = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    actual = interop.state_dict(fnml_model)
    assert sorted(actual) == sorted(expected)
    return max_abs_diff(actual, expected)


def _fnml_steps(step, state, batches):
    losses_ = []
    for x, y in batches:
        state, loss = step(state, jnp.asarray(x), jnp.asarray(y))
        losses_.append(float(loss))
    return state, np.array(losses_)


# --------------------------------------------------------------------------------------------------
# make_train_step: the frozen, eval-mode backbone
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_frozen_eval_backbone_trains_like_torch(kind):
    torch_model, model = _pair()
    _finetune_modes(torch_model).backbone.requires_grad_(False)
    _finetune_modes(model)
    layers.freeze(model.backbone)
    backbone_before = {k: v.clone() for k, v in torch_model.backbone.state_dict().items()}
    head_before = {k: v.clone() for k, v in torch_model.head.bn.state_dict().items()}
    batches = _batches()

    trainable = [p for p in torch_model.parameters() if p.requires_grad]
    torch_losses = _torch_steps(torch_model, _torch_optimizer(kind, trainable), batches)
    state = train.TrainState.create(model, FNML_OPTIMIZERS[kind])
    state, fnml_losses = _fnml_steps(train.make_train_step(CE), state, batches)

    assert sorted(state.frozen) == ["backbone"] and sorted(state.params) == ["head"]
    assert np.max(np.abs(fnml_losses - torch_losses)) <= ATOL
    assert _state_dict_diff(state.model(), torch_model) <= ATOL
    # torch: the eval-mode backbone's BatchNorm kept its statistics (the bug moved them by 2.5e-3 on resnet18);
    # the train-mode head's BatchNorm updated its own, which fnml matched above.
    for name, value in backbone_before.items():
        assert torch.equal(torch_model.backbone.state_dict()[name], value), name
    fnml_backbone = interop.state_dict(state.model().backbone)
    for name, value in backbone_before.items():
        np.testing.assert_array_equal(fnml_backbone[name], value.numpy())
    assert not torch.equal(torch_model.head.bn.running_mean, head_before["running_mean"])
    assert int(torch_model.head.bn.num_batches_tracked) == STEPS


def test_eval_mode_training_matches_torch():
    """``model.eval()`` then training: torch trains with dropout off and running statistics used, not updated."""
    torch_model, model = _pair()
    torch_model.eval()
    model.eval()
    batches = _batches()
    torch_losses = _torch_steps(torch_model, _torch_optimizer("sgd", torch_model.parameters()), batches)
    state = train.TrainState.create(model, FNML_OPTIMIZERS["sgd"])
    state, fnml_losses = _fnml_steps(train.make_train_step(CE), state, batches)

    assert np.max(np.abs(fnml_losses - torch_losses)) <= ATOL
    assert _state_dict_diff(state.model(), torch_model) <= ATOL
    assert int(torch_model.head.bn.num_batches_tracked) == 0  # eval mode: no update, in torch and fnml
    assert int(state.rest["head"]["bn"]["num_batches_tracked"]) == 0


# --------------------------------------------------------------------------------------------------
# fit: keep_modes=True keeps the user's modes; the default trains in training mode; validation in eval
# --------------------------------------------------------------------------------------------------

FIT_ROWS, FIT_BATCH, FIT_EPOCHS = 30, 10, 2  # 3 steps per epoch, validation after each epoch


def _torch_fit(torch_model, optimizer, X, Y, X_val, Y_val, set_modes):
    """torch's epoch loop: ``set_modes`` at each epoch's start, ``model.eval()`` for validation."""
    losses_, val = [], []
    for _ in range(FIT_EPOCHS):
        batches = [(X[i : i + FIT_BATCH], Y[i : i + FIT_BATCH]) for i in range(0, FIT_ROWS, FIT_BATCH)]
        losses_.extend(_torch_steps(torch_model, optimizer, batches, set_modes=set_modes))
        val.append(_torch_val_loss(torch_model, X_val, Y_val))
    return np.array(losses_), np.array(val)


def _fit(model, X, Y, X_val, Y_val, **options):
    return train.fit(
        model,
        FNML_OPTIMIZERS["sgd"],
        CE,
        X,
        Y,
        epochs=FIT_EPOCHS,
        batch_size=FIT_BATCH,
        validation=(X_val, Y_val),
        verbose=False,
        **options,
    )


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_fit_keep_modes_trains_the_frozen_backbone_recipe_like_torch(fused):
    torch_model, model = _pair()
    torch_model.backbone.requires_grad_(False)
    layers.freeze(_finetune_modes(model).backbone)
    X, Y = _data(FIT_ROWS)
    X_val, Y_val = _data(7, seed=2)
    trainable = [p for p in torch_model.parameters() if p.requires_grad]
    torch_losses, torch_val = _torch_fit(
        torch_model, _torch_optimizer("sgd", trainable), X, Y, X_val, Y_val, _finetune_modes
    )

    result = _fit(model, X, Y, X_val, Y_val, keep_modes=True, fused=fused)

    assert np.max(np.abs(result.losses - torch_losses)) <= ATOL
    assert np.max(np.abs(result.history["val_loss"] - torch_val)) <= ATOL
    assert _state_dict_diff(result.model, torch_model) <= ATOL
    assert int(result.state.rest["backbone"]["bn"]["num_batches_tracked"]) == 0
    # The modes training ran in come back: the backbone still in eval mode, the head in training mode.
    assert result.model.backbone.bn.use_running_average and result.model.backbone.drop.deterministic
    assert not result.model.head.bn.use_running_average


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_fit_default_trains_every_submodule_in_training_mode_like_torch(fused):
    """Without keep_modes, fit is torch's loop with ``model.train()`` at each epoch's start: the backbone's
    eval mode set by the user is overridden (frozen parameters, but its BatchNorm statistics move)."""
    torch_model, model = _pair(p=0.0)  # dropout active in training mode: masks cannot match, so p=0
    torch_model.backbone.requires_grad_(False)
    layers.freeze(_finetune_modes(model).backbone)
    X, Y = _data(FIT_ROWS)
    X_val, Y_val = _data(7, seed=2)
    trainable = [p for p in torch_model.parameters() if p.requires_grad]
    torch_losses, torch_val = _torch_fit(
        torch_model, _torch_optimizer("sgd", trainable), X, Y, X_val, Y_val, lambda m: m.train()
    )

    result = _fit(model, X, Y, X_val, Y_val, fused=fused)

    assert np.max(np.abs(result.losses - torch_losses)) <= ATOL
    assert np.max(np.abs(result.history["val_loss"] - torch_val)) <= ATOL
    assert _state_dict_diff(result.model, torch_model) <= ATOL
    steps = FIT_EPOCHS * FIT_ROWS // FIT_BATCH
    assert int(result.state.rest["backbone"]["bn"]["num_batches_tracked"]) == steps
    assert not result.model.backbone.bn.use_running_average and not result.model.backbone.drop.deterministic


def test_fit_keep_modes_resumes_exactly(tmp_path):
    """A resumed keep_modes run (modes from the model passed in, as the template) equals the uninterrupted one."""
    X, Y = _data(FIT_ROWS)
    X_val, Y_val = _data(7, seed=2)

    def build():
        m = _pair()[1]
        layers.freeze(_finetune_modes(m).backbone)
        return m

    whole = _fit(build(), X, Y, X_val, Y_val, keep_modes=True)
    first = train.fit(
        build(),
        FNML_OPTIMIZERS["sgd"],
        CE,
        X,
        Y,
        epochs=1,
        batch_size=FIT_BATCH,
        validation=(X_val, Y_val),
        keep_modes=True,
        checkpoint_dir=str(tmp_path),
        verbose=False,
    )
    assert first.losses.shape == (FIT_ROWS // FIT_BATCH,)
    resumed = _fit(build(), X, Y, X_val, Y_val, keep_modes=True, resume_from=str(tmp_path))
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    for a, b in zip(
        jax.tree.leaves((resumed.state.params, resumed.state.rest)),
        jax.tree.leaves((whole.state.params, whole.state.rest)),
    ):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):  # Dropout's key: compare its bits
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(a, b)
    assert resumed.state.graphdef == whole.state.graphdef
    assert resumed.model.backbone.bn.use_running_average


# --------------------------------------------------------------------------------------------------
# TrainState's mode switches; compare_training and make_train_step follow one rule
# --------------------------------------------------------------------------------------------------


def test_state_train_eval_and_with_modes_switch_the_graphdef_only():
    _, model = _pair()
    state = train.TrainState.create(model, FNML_OPTIMIZERS["sgd"])
    evaluated = state.eval()
    assert evaluated.params is state.params and evaluated.rest is state.rest and evaluated.frozen is state.frozen
    assert evaluated.opt_state is state.opt_state
    switched = evaluated.model()
    assert switched.backbone.bn.use_running_average and switched.head.bn.use_running_average
    assert switched.backbone.drop.deterministic
    assert evaluated.train().graphdef == state.graphdef  # the same static key: a jitted step reuses its compile
    assert evaluated.train(False).graphdef == evaluated.graphdef
    assert state.model().backbone.bn.use_running_average is False  # the original state is unchanged

    mixed = state.with_modes(_finetune_modes)
    direct = train.TrainState.create(_finetune_modes(_pair()[1]), FNML_OPTIMIZERS["sgd"])
    assert mixed.graphdef == direct.graphdef
    assert mixed.model().backbone.bn.use_running_average and not mixed.model().head.bn.use_running_average


def test_a_step_compiles_once_per_mode_mix_and_follows_the_state():
    _, model = _pair()
    state = train.TrainState.create(model, FNML_OPTIMIZERS["sgd"])
    step = train.make_train_step(losses.CrossEntropyLoss())  # its own criterion: a fresh jit cache
    (x, y), *_ = _batches()
    x, y = jnp.asarray(x), jnp.asarray(y)
    s_eval, _ = step(state.eval(), x, y)
    s_train, _ = step(state, x, y)
    s_eval2, _ = step(s_train.eval(), x, y)
    s_train2, _ = step(s_eval2.train(), x, y)
    assert cache_size(step) == 2
    # eval mode kept the statistics, training mode moved them
    np.testing.assert_array_equal(s_eval.rest["head"]["bn"]["running_mean"], state.rest["head"]["bn"]["running_mean"])
    assert int(s_train2.rest["head"]["bn"]["num_batches_tracked"]) == 2
    assert s_train2.model().head.bn.use_running_average is False


def test_compare_training_and_make_train_step_give_the_same_trajectory_for_a_mixed_mode_model():
    torch_model, model = _pair()
    _finetune_modes(torch_model).backbone.requires_grad_(False)
    layers.freeze(_finetune_modes(model).backbone)
    batches = _batches()
    state = train.TrainState.create(model, FNML_OPTIMIZERS["sgd"])  # before compare_training trains `model`
    _, step_losses = _fnml_steps(train.make_train_step(CE), state, batches)

    trainable = [p for p in torch_model.parameters() if p.requires_grad]
    report = parity.compare_training(
        torch_model,
        _torch_optimizer("sgd", trainable),
        torch.nn.CrossEntropyLoss(),
        model,
        FNML_OPTIMIZERS["sgd"],
        CE,
        [(x, y) for x, y in batches],
    )
    assert report.passed, report
    assert max(abs(a - b) for a, b in zip(report.fnml_losses, report.torch_losses)) <= ATOL
    np.testing.assert_array_equal(np.array(report.fnml_losses), step_losses)


def test_eval_step_runs_eval_mode_whatever_the_state_records():
    torch_model, model = _pair()
    X, Y = _data(7, seed=2)
    state = train.TrainState.create(model, FNML_OPTIMIZERS["sgd"])  # training mode everywhere
    evaluate = train.make_eval_step(CE)
    expected = _torch_val_loss(torch_model, X, Y)
    for s in (state, state.eval(), state.with_modes(_finetune_modes)):
        assert abs(float(evaluate(s, jnp.asarray(X), jnp.asarray(Y))["loss"]) - expected) <= ATOL


# --------------------------------------------------------------------------------------------------
# A ported ResNet: twin.eval() and a frozen backbone train like torch
# --------------------------------------------------------------------------------------------------


class TorchBlock(torch.nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(channels)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class TinyResNet(torch.nn.Module):
    """torchvision's ResNet layout (conv1, bn1, layer1, avgpool, fc), 4 channels."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.layer1 = torch.nn.Sequential(TorchBlock(4))
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        x = self.layer1(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def test_ported_resnet_in_eval_mode_with_a_frozen_backbone_trains_like_torch():
    torch.manual_seed(3)
    torch_model = TinyResNet().double()
    with torch.no_grad():
        for module in torch_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)
    for name, param in torch_model.named_parameters():
        if not name.startswith("fc."):
            param.requires_grad_(False)  # the backbone: the twin reads the marking (frozen parameters)
    rng = np.random.default_rng(4)
    images = rng.normal(size=(STEPS, 4, 3, 16, 16))
    labels = rng.integers(0, 3, size=(STEPS, 4))
    twin = interop.from_torch(torch_model, torch.as_tensor(images[0])).eval()
    torch_model.eval()

    batches = list(zip(images, labels))
    trainable = [p for p in torch_model.parameters() if p.requires_grad]
    torch_losses = _torch_steps(torch_model, _torch_optimizer("sgd", trainable), batches)
    state = train.TrainState.create(twin, FNML_OPTIMIZERS["sgd"])
    assert sorted(state.params) == ["fc"]
    state, fnml_losses = _fnml_steps(train.make_train_step(CE), state, batches)

    assert np.max(np.abs(fnml_losses - torch_losses)) <= ATOL
    assert _state_dict_diff(state.model(), torch_model) <= ATOL
    assert int(torch_model.bn1.num_batches_tracked) == 0


def test_a_ported_mixed_mode_model_keeps_each_fnml_layer_mode():
    """``from_torch`` gives each leaf that becomes an fnml layer (BatchNorm, Dropout) its torch module's own
    mode, so the frozen-backbone recipe ported as is trains like torch. (Modules that are NOT fnml layers and
    read ``self.training`` follow the twin's single ``training`` flag instead: not covered here.)"""
    torch_model, _ = _pair()
    _finetune_modes(torch_model).backbone.requires_grad_(False)
    twin = interop.from_torch(torch_model, torch.as_tensor(_batches()[0][0]))
    assert twin.backbone.bn.use_running_average and twin.backbone.drop.deterministic
    assert not twin.head.bn.use_running_average
    trainable = [p for p in torch_model.parameters() if p.requires_grad]
    report = parity.compare_training(
        torch_model,
        _torch_optimizer("sgd", trainable),
        torch.nn.CrossEntropyLoss(),
        twin,
        FNML_OPTIMIZERS["sgd"],
        CE,
        _batches(),
    )
    assert report.passed, report
    assert max(abs(a - b) for a, b in zip(report.fnml_losses, report.torch_losses)) <= ATOL
    assert max(row.max_abs_diff for row in report.parameters) <= ATOL
    assert (
        int(torch_model.backbone.bn.num_batches_tracked) == 0 and int(torch_model.head.bn.num_batches_tracked) == STEPS
    )


class _Scaled(torch.nn.Module):
    """Custom code reading self.training (not an fnml layer): doubles its input in training mode only."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)

    def forward(self, x):
        x = self.fc(x)
        return x * 2.0 if self.training else x


class _WithScaledBackbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = _Scaled()
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.backbone(x))


def test_a_mode_mix_the_captured_code_cannot_run_is_refused_at_port_and_at_call():
    """Captured code reading ``self.training`` follows the whole model's mode: a module of it in another mode
    than the root would silently run the root's branch, so porting or calling in that mix raises."""
    from fnml.interop.lowering import UnsupportedTorchOpError

    torch_model = _WithScaledBackbone().double()
    example = torch.ones(4, 3, dtype=torch.float64)
    torch_model.train()
    torch_model.backbone.eval()  # torch runs the backbone's eval branch (no doubling) here
    with pytest.raises(
        UnsupportedTorchOpError,
        match=r"from_torch: module 'backbone' \(_Scaled\) reads "
        r"self.training .* eval mode while the model is in training mode.*model.backbone.train\(\)",
    ):
        interop.from_torch(torch_model, example)
    torch_model.backbone.train()  # the model's mode: ports, and runs torch's branches in both modes
    twin = interop.from_torch(torch_model, example)
    for mode in (True, False):
        torch_model.train(mode)
        twin.train(mode)
        with torch.no_grad():
            expected = torch_model(example).numpy()
        assert max_abs_diff(twin(example), expected) <= ATOL
    twin.train()
    twin.backbone.eval()  # the same mix on the twin: refused when called, not computed wrongly
    with pytest.raises(UnsupportedTorchOpError, match=r"the call: module 'backbone' .* twin.backbone.train\(\)"):
        twin(example)
    twin.backbone.train()
    assert max_abs_diff(twin(example), torch_model.train()(example).detach().numpy()) <= ATOL


# --------------------------------------------------------------------------------------------------
# Error paths
# --------------------------------------------------------------------------------------------------


def test_fit_keep_modes_must_be_a_bool():
    X, Y = _data(FIT_ROWS)
    with pytest.raises(TypeError, match=r"fit: keep_modes must be a bool \(True or False\), got 'yes' \(str\)"):
        train.fit(_pair()[1], FNML_OPTIMIZERS["sgd"], CE, X, Y, epochs=1, keep_modes="yes", verbose=False)


def test_state_mode_switch_errors():
    state = train.TrainState.create(_pair()[1], FNML_OPTIMIZERS["sgd"])
    with pytest.raises(TypeError, match=r"TrainState.train: mode must be a bool \(True or False\), got 1 \(int\)"):
        state.train(1)
    with pytest.raises(TypeError, match=r"TrainState.with_modes: set_modes must be callable\(module\).*got 'eval'"):
        state.with_modes("eval")
    with pytest.raises(ValueError, match=r"TrainState.with_modes: set_modes may only switch modes"):
        state.with_modes(lambda m: layers.freeze(m.head))

    def write(module):
        module.head.bn.running_mean[...] = jnp.ones(5)

    with pytest.raises(ValueError, match=r"changed the module's arrays"):
        state.with_modes(write)
