"""Training loops beyond criterion(model(x), y), each against the same loop written in torch.

Several inputs (tuple / dict), the general ``loss_fn`` step with aux (truncated BPTT, L1 penalty),
gradient accumulation (+ BatchNorm + schedule, and optax.MultiSteps), frozen and unfrozen parameters,
tied parameters, ``train.accuracy``, the recompile guard of every new step form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from helpers import cache_size, jax_dtype, max_abs_diff, one_torch_thread, tolerance

from fnml import data, layers, losses, optim, parity, train


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    with one_torch_thread():  # torch on tiny tensors: its thread pool only costs (helpers.one_torch_thread)
        yield


MSE = losses.MSELoss()


def _tol(dtype: str) -> float:
    """Per-step losses and final parameters: the float64 table entry (measured <= 2e-15), float32 trajectories'."""
    return tolerance("float64" if dtype == "float64" else "float32_trajectory")["atol"]


def _close(what: str, diff: float, dtype: str) -> None:
    """Assert a measured max |fnml - torch| against the tolerance; the figure is printed (``pytest -s``)."""
    print(f"measured {what} [{dtype}]: {diff:.3g}")
    assert diff <= _tol(dtype), f"{what}: max |fnml - torch| = {diff:.3g} > {_tol(dtype):g} ({dtype})"


# ---- copying weights torch -> fnml, reading them back in torch names ------------------------------


def _fnml_slot(model, name):
    """(fnml variable, layout) for a torch state_dict name: layout "T" (Linear/LSTM), "conv" or None."""
    *path, leaf = name.split(".")
    module = model
    for part in path:
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    if isinstance(module, layers.Linear) and leaf == "weight":
        return module.kernel, "T"
    if isinstance(module, layers.Conv2d) and leaf == "weight":
        return module.kernel, "conv"
    if leaf.startswith("weight_"):  # LSTM weight_ih_l0 (4H, in) -> kernel_ih_l0 (in, 4H)
        return getattr(module, "kernel_" + leaf[len("weight_") :]), "T"
    return getattr(module, leaf), None


def _to_fnml(value, layout):
    if layout == "T":
        return value.T  # torch (out, in) -> (in, out)
    return value.transpose(2, 3, 1, 0) if layout == "conv" else value  # OIHW -> HWIO


def _to_torch(value, layout):
    if layout == "T":
        return value.T  # (in, out) -> torch (out, in)
    return value.transpose(3, 2, 0, 1) if layout == "conv" else value  # HWIO -> OIHW


# Not helpers.copy_torch_weights: its arrays share the torch tensors' memory, and torch trains in place here.
def _load(model, torch_model):
    for name, tensor in torch_model.state_dict().items():
        variable, layout = _fnml_slot(model, name)
        value = _to_fnml(tensor.detach().numpy().copy(), layout)  # a copy: torch updates its tensors in place
        variable[...] = jnp.asarray(value, dtype=variable[...].dtype)
    return model


def _fnml_sd(model, torch_model):
    """fnml values under torch names in torch layout (inverse of _load)."""
    out = {}
    for name in torch_model.state_dict():
        variable, layout = _fnml_slot(model, name)
        out[name] = _to_torch(np.asarray(variable[...]), layout)
    return out


def _torch_sd(torch_model):
    return {k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()}


# ---- several inputs: a tuple (one of them through an Embedding) and a dict ------------------------


class TorchTwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(5, 3)
        self.fc1 = torch.nn.Linear(4 + 3, 6)
        self.fc2 = torch.nn.Linear(6, 1)

    def forward(self, x_num, x_cat):
        return self.fc2(torch.tanh(self.fc1(torch.cat([x_num, self.emb(x_cat)], dim=1))))


class TwoInputs(nnx.Module):
    def __init__(self, *, param_dtype, rngs):
        self.emb = layers.Embedding(5, 3, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = layers.Linear(4 + 3, 6, param_dtype=param_dtype, rngs=rngs)
        self.fc2 = layers.Linear(6, 1, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x_num, x_cat):
        return self.fc2(jnp.tanh(self.fc1(jnp.concatenate([x_num, self.emb(x_cat)], axis=1))))


def _two_input_data(torch_dtype, n=14):
    x_num = torch.randn(n, 4, dtype=torch_dtype)
    x_cat = torch.randint(0, 5, (n,))
    y = torch.randn(n, 1, dtype=torch_dtype)
    return x_num, x_cat, y


@pytest.mark.parametrize("form", ["tuple", "dict"])
@pytest.mark.parametrize("shuffle", [False, True], ids=["in-order", "shuffled"])
def test_fit_with_several_inputs_matches_torch(dtype, torch_dtype, form, shuffle):
    n, batch_size, epochs, key = 14, 4, 2, jax.random.key(3)  # 4 batches per epoch, the last of 2
    torch_model = TorchTwoInputs().to(torch_dtype)
    model = _load(TwoInputs(param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0)), torch_model)
    x_num, x_cat, y = _two_input_data(torch_dtype, n)

    optimizer = torch.optim.Adam(torch_model.parameters(), lr=0.01)
    torch_losses = []
    for epoch in range(epochs):
        # the same batch order as fnml's (fnml.data's permutation)
        for index in data.batch_indices(n, batch_size, shuffle=shuffle, key=key, epoch=epoch):
            index = torch.as_tensor(np.asarray(index))
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(torch_model(x_num[index], x_cat[index]), y[index])
            loss.backward()
            optimizer.step()
            torch_losses.append(loss.item())

    X = (x_num.numpy(), x_cat.numpy()) if form == "tuple" else {"x_num": x_num.numpy(), "x_cat": x_cat.numpy()}
    result = train.fit(
        model, optim.adam(lr=0.01), MSE, X, y.numpy(), epochs=epochs, batch_size=batch_size, shuffle=shuffle,
        key=key, verbose=False,
    )  # fmt: skip
    _close("per-step loss", np.max(np.abs(result.losses - np.array(torch_losses))), dtype)
    _close("final parameters", max_abs_diff(_fnml_sd(result.model, torch_model), _torch_sd(torch_model)), dtype)


def test_fit_general_form_and_eval_step_with_several_inputs():
    torch_model = TorchTwoInputs().double()
    x_num, x_cat, y = _two_input_data(torch.float64)
    model = _load(TwoInputs(param_dtype=jnp.float64, rngs=nnx.Rngs(0)), torch_model)

    def loss_fn(m, a, b, target):
        return losses.mse_loss(m(a, b), target)

    arrays = (x_num.numpy(), x_cat.numpy(), y.numpy())
    general = train.fit(model, optim.sgd(lr=0.1), loss_fn=loss_fn, data=arrays, epochs=3, batch_size=7,
                        validation=arrays, verbose=False)  # fmt: skip
    short = train.fit(model, optim.sgd(lr=0.1), MSE, arrays[:2], arrays[2], epochs=3, batch_size=7,
                      validation=(arrays[:2], arrays[2]), verbose=False)  # fmt: skip
    np.testing.assert_array_equal(general.losses, short.losses)
    np.testing.assert_array_equal(general.history["val_loss"], short.history["val_loss"])
    # make_eval_step, both forms, against torch's eval forward
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(torch_model.eval()(x_num, x_cat), y).item()
    state = train.TrainState.create(model, optim.sgd(lr=0.1))
    by_criterion = train.make_eval_step(MSE)(state, arrays[:2], arrays[2])["loss"]
    by_loss_fn = train.make_eval_step(loss_fn=loss_fn)(state, *arrays)["loss"]
    by_dict = train.make_eval_step(MSE)(state, {"x_num": arrays[0], "x_cat": arrays[1]}, arrays[2])["loss"]
    for value in (by_criterion, by_loss_fn, by_dict):
        assert abs(float(value) - expected) <= 1e-12


# ---- the general step: truncated BPTT (word_language_model) and an L1 penalty --------------------

V, E, H, T, B = 11, 5, 6, 4, 3  # vocabulary, embedding, hidden, bptt length, batch


class TorchLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(V, E)
        self.lstm = torch.nn.LSTM(E, H)
        self.fc = torch.nn.Linear(H, V)

    def forward(self, x, hidden):
        output, hidden = self.lstm(self.emb(x), hidden)
        return self.fc(output), hidden


class LM(nnx.Module):
    def __init__(self, *, param_dtype, rngs):
        self.emb = layers.Embedding(V, E, param_dtype=param_dtype, rngs=rngs)
        self.lstm = layers.LSTM(E, H, param_dtype=param_dtype, rngs=rngs)
        self.fc = layers.Linear(H, V, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, hidden):
        output, hidden = self.lstm(self.emb(x), hidden)
        return self.fc(output), hidden


def lm_loss(model, x, y, hidden):
    logits, hidden = model(x, hidden)  # (T, B, V)
    return losses.cross_entropy(logits.reshape(-1, V), y.reshape(-1)), hidden  # (T*B, V)


def test_truncated_bptt_carries_the_hidden_state_like_torch(dtype, torch_dtype):
    torch_model = TorchLM().to(torch_dtype)
    model = _load(LM(param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0)), torch_model)
    stream = torch.randint(0, V, (5 * T + 1, B))  # 5 batches of T steps

    # torch's word_language_model loop: repackage (detach) the hidden state every batch, clip, SGD.
    optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.5)
    torch_hidden = (torch.zeros(1, B, H, dtype=torch_dtype), torch.zeros(1, B, H, dtype=torch_dtype))
    torch_losses = []
    for i in range(0, 5 * T, T):
        x, y = stream[i : i + T], stream[i + 1 : i + 1 + T]
        torch_hidden = tuple(h.detach() for h in torch_hidden)  # repackage_hidden
        optimizer.zero_grad()
        logits, torch_hidden = torch_model(x, torch_hidden)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(torch_model.parameters(), 0.25)
        optimizer.step()
        torch_losses.append(loss.item())

    step = train.make_train_step(loss_fn=lm_loss, has_aux=True)
    state = train.TrainState.create(model, optax.chain(optim.clip_grad_norm(0.25), optim.sgd(lr=0.5)))
    hidden = (jnp.zeros((1, B, H), jax_dtype(dtype)), jnp.zeros((1, B, H), jax_dtype(dtype)))
    tokens = stream.numpy()
    fnml_losses = []
    for i in range(0, 5 * T, T):
        state, loss, hidden = step(state, tokens[i : i + T], tokens[i + 1 : i + 1 + T], hidden)
        fnml_losses.append(float(loss))
    assert cache_size(step) == 1  # the carried hidden state keeps shapes: one compilation
    _close("per-step loss", np.max(np.abs(np.array(fnml_losses) - np.array(torch_losses))), dtype)
    _close("final parameters", max_abs_diff(_fnml_sd(state.model(), torch_model), _torch_sd(torch_model)), dtype)
    _close("carried hidden state", max_abs_diff(hidden, torch_hidden), dtype)


def test_loss_with_an_l1_penalty_over_the_parameters(dtype, torch_dtype):
    torch_model = TorchTwoInputs().to(torch_dtype)
    model = _load(TwoInputs(param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0)), torch_model)
    x_num, x_cat, y = _two_input_data(torch_dtype, 8)
    lam = 1e-3
    optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.05, momentum=0.9)
    torch_losses = []
    for _ in range(6):
        optimizer.zero_grad()
        penalty = sum(p.abs().sum() for p in torch_model.parameters())
        loss = torch.nn.functional.mse_loss(torch_model(x_num, x_cat), y) + lam * penalty
        loss.backward()
        optimizer.step()
        torch_losses.append(loss.item())

    def penalised(m, a, b, target):
        penalty = sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(nnx.state(m, nnx.Param)))
        return losses.mse_loss(m(a, b), target) + lam * penalty

    step = train.make_train_step(loss_fn=penalised)
    state = train.TrainState.create(model, optim.sgd(lr=0.05, momentum=0.9))
    fnml_losses = []
    for _ in range(6):
        state, loss = step(state, x_num.numpy(), x_cat.numpy(), y.numpy())
        fnml_losses.append(float(loss))
    assert cache_size(step) == 1
    _close("per-step loss", np.max(np.abs(np.array(fnml_losses) - np.array(torch_losses))), dtype)
    _close("final parameters", max_abs_diff(_fnml_sd(state.model(), torch_model), _torch_sd(torch_model)), dtype)


# ---- gradient accumulation --------------------------------------------------------------------------


class TorchBN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        # no bias before BatchNorm: its gradient is 0 up to rounding, which Adam would amplify to O(lr) steps
        self.fc1 = torch.nn.Linear(3, 5, bias=False)
        self.bn = torch.nn.BatchNorm1d(5)
        self.fc2 = torch.nn.Linear(5, 1)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class BN(nnx.Module):
    def __init__(self, *, param_dtype=jnp.float32, rngs):
        self.fc1 = layers.Linear(3, 5, bias=False, param_dtype=param_dtype, rngs=rngs)
        self.bn = layers.BatchNorm1d(5, param_dtype=param_dtype)
        self.fc2 = layers.Linear(5, 1, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.relu(self.bn(self.fc1(x))))


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_accumulate_steps_matches_torchs_accumulation_loop(dtype, torch_dtype, fused):
    n, micro, accumulate, epochs, key = 24, 3, 4, 2, jax.random.key(7)  # 8 micro-batches = 2 optimizer steps
    torch_model = TorchBN().to(torch_dtype)
    model = _load(BN(param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0)), torch_model)
    X, Y = torch.randn(n, 3, dtype=torch_dtype), torch.randn(n, 1, dtype=torch_dtype)

    optimizer = torch.optim.AdamW(torch_model.parameters(), lr=0.02, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    torch_losses = []
    for epoch in range(epochs):
        batches = data.batch_indices(n, micro, shuffle=True, key=key, epoch=epoch)
        for start in range(0, len(batches), accumulate):
            optimizer.zero_grad()
            total = 0.0
            for index in batches[start : start + accumulate]:
                index = torch.as_tensor(np.asarray(index))
                loss = torch.nn.functional.mse_loss(torch_model(X[index]), Y[index])
                (loss / accumulate).backward()
                total += loss.item() / accumulate
            optimizer.step()
            scheduler.step()  # once per optimizer step
            torch_losses.append(total)

    tx = optim.adamw(lr=optim.step_lr(lr=0.02, step_size=2, gamma=0.5), weight_decay=0.1)
    result = train.fit(
        model, tx, MSE, X.numpy(), Y.numpy(), epochs=epochs, batch_size=micro, shuffle=True, key=key,
        accumulate_steps=accumulate, fused=fused, verbose=False,
    )  # fmt: skip
    assert result.losses.shape == (epochs * 2,) and int(result.state.step) == epochs * 2
    _close("per-step loss", np.max(np.abs(result.losses - np.array(torch_losses))), dtype)
    # parameters AND BatchNorm buffers: the running statistics moved once per MICRO-batch
    _close("final parameters", max_abs_diff(_fnml_sd(result.model, torch_model), _torch_sd(torch_model)), dtype)
    assert int(result.model.bn.num_batches_tracked[...]) == epochs * 8


def test_accumulate_steps_equals_optax_multisteps_and_recompiles_never():
    model = BN(param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    X = jax.random.normal(jax.random.key(1), (16, 3), jnp.float64)
    Y = jax.random.normal(jax.random.key(2), (16, 1), jnp.float64)
    accumulated = train.make_train_step(MSE, accumulate_steps=4)
    sgd = optim.sgd(lr=0.1, momentum=0.9, weight_decay=0.01)  # no Adam here: it amplifies rounding of ~0 grads
    state = train.TrainState.create(model, sgd)
    for i in range(2):
        state, loss = accumulated(state, X[8 * i : 8 * i + 8], Y[8 * i : 8 * i + 8])  # 4 micro-batches of 2
    assert cache_size(accumulated) == 1 and int(state.step) == 2
    micro_step = train.make_train_step(MSE)
    multi = train.TrainState.create(model, optax.MultiSteps(sgd, every_k_schedule=4, accumulator_dtype=jnp.float64))
    for i in range(8):
        multi, _ = micro_step(multi, X[2 * i : 2 * i + 2], Y[2 * i : 2 * i + 2])
    # MultiSteps: one step call per micro-batch; its accumulator is float32 unless accumulator_dtype says otherwise
    assert int(multi.step) == 8
    assert max_abs_diff(jax.tree.leaves(multi.params), jax.tree.leaves(state.params)) <= 1e-12
    assert max_abs_diff(jax.tree.leaves(multi.rest), jax.tree.leaves(state.rest)) <= 1e-12


def test_accumulate_steps_errors():
    X, Y = np.ones((10, 3), np.float32), np.ones((10, 1), np.float32)
    model = BN(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="accumulate_steps=4 needs every optimizer step to see 4 full micro-batches"):
        train.fit(model, optim.sgd(lr=0.1), MSE, X, Y, epochs=1, batch_size=2, accumulate_steps=4)
    with pytest.raises(ValueError, match="10 samples are not divisible by 3"):
        train.fit(model, optim.sgd(lr=0.1), MSE, X, Y, epochs=1, accumulate_steps=3)
    with pytest.raises(TypeError, match="accumulate_steps must be a positive integer"):
        train.make_train_step(MSE, accumulate_steps=1.5)
    step = train.make_train_step(MSE, accumulate_steps=3)
    with pytest.raises(ValueError, match="leading axis divisible by 3"):
        step(train.TrainState.create(model, optim.sgd(lr=0.1)), X, Y)


# ---- frozen parameters -----------------------------------------------------------------------------


def test_frozen_layers_under_adamw_weight_decay_match_torch(dtype, torch_dtype):
    torch_model = TorchBN().to(torch_dtype)
    model = _load(BN(param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0)), torch_model)
    X, Y = torch.randn(8, 3, dtype=torch_dtype), torch.randn(8, 1, dtype=torch_dtype)
    torch_model.fc1.requires_grad_(False)
    frozen_before = _torch_sd(torch_model)
    # all parameters handed to AdamW: the frozen ones get no grad, hence no step and no decay
    optimizer = torch.optim.AdamW(torch_model.parameters(), lr=0.05, weight_decay=0.5)
    torch_losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(torch_model(X), Y)
        loss.backward()
        optimizer.step()
        torch_losses.append(loss.item())

    layers.freeze(model.fc1)
    result = train.fit(model, optim.adamw(lr=0.05, weight_decay=0.5), MSE, X.numpy(), Y.numpy(), epochs=4,
                       verbose=False)  # fmt: skip
    assert sorted(result.state.frozen) == ["fc1"] and "fc1" not in result.state.params
    assert "fc1" not in str(jax.tree.structure(result.state.opt_state))  # no optimizer state for frozen ones
    fnml_sd = _fnml_sd(result.model, torch_model)
    for name in ("fc1.weight",):
        np.testing.assert_array_equal(fnml_sd[name], frozen_before[name])  # bitwise untouched
    _close("per-step loss", np.max(np.abs(result.losses - np.array(torch_losses))), dtype)
    _close("final parameters", max_abs_diff(fnml_sd, _torch_sd(torch_model)), dtype)
    assert layers.is_frozen(None, result.model.fc1.kernel)  # to_module keeps the marking


def test_unfreezing_mid_training_is_a_new_optimizer_like_torch(dtype, torch_dtype):
    torch_model = TorchBN().to(torch_dtype)
    model = _load(BN(param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0)), torch_model)
    X, Y = torch.randn(8, 3, dtype=torch_dtype), torch.randn(8, 1, dtype=torch_dtype)
    torch_model.fc1.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in torch_model.parameters() if p.requires_grad], lr=0.05)
    torch_losses = []
    for phase in range(2):
        if phase == 1:  # fine-tune everything: requires_grad_(True) and a NEW optimizer (fresh moments)
            torch_model.fc1.requires_grad_(True)
            optimizer = torch.optim.AdamW(torch_model.parameters(), lr=0.01)
        for _ in range(3):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(torch_model(X), Y)
            loss.backward()
            optimizer.step()
            torch_losses.append(loss.item())

    step = train.make_train_step(MSE)
    layers.freeze(model.fc1)
    state = train.TrainState.create(model, optim.adamw(lr=0.05))
    fnml_losses = []
    for phase in range(2):
        if phase == 1:
            unfrozen = train.to_module(state)
            layers.unfreeze(unfrozen.fc1)
            state = train.TrainState.create(unfrozen, optim.adamw(lr=0.01))
            assert state.frozen == {} and int(state.step) == 0  # fresh optimizer state, step 0
        for _ in range(3):
            state, loss = step(state, X.numpy(), Y.numpy())
            fnml_losses.append(float(loss))
    assert cache_size(step) == 2  # one compilation per partition (frozen fc1, then all trainable)
    _close("per-step loss", np.max(np.abs(np.array(fnml_losses) - np.array(torch_losses))), dtype)
    _close("final parameters", max_abs_diff(_fnml_sd(state.model(), torch_model), _torch_sd(torch_model)), dtype)


def test_compare_training_honours_frozen_parameters():
    torch_model = TorchBN().double()
    model = _load(BN(param_dtype=jnp.float64, rngs=nnx.Rngs(0)), torch_model)
    torch_model.fc2.requires_grad_(False)
    layers.freeze(model.fc2)
    batches = [(torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64)) for _ in range(3)]
    before = _torch_sd(torch_model)["fc2.weight"]
    report = parity.compare_training(
        torch_model, torch.optim.AdamW(torch_model.parameters(), lr=0.05, weight_decay=0.3),
        torch.nn.MSELoss(), model, optim.adamw(lr=0.05, weight_decay=0.3), MSE, batches, steps=5,
    )  # fmt: skip
    assert report.passed, report.to_dict()
    assert report.max_loss_diff <= 1e-12 and report.max_param_diff <= 1e-12
    np.testing.assert_array_equal(np.asarray(model.fc2.kernel[...]).T, before)


# ---- tied parameters ----------------------------------------------------------------------------


class TorchTied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Embedding(V, E)
        self.decoder = torch.nn.Linear(E, V)
        self.decoder.weight = self.encoder.weight  # weight tying

    def forward(self, x):
        return self.decoder(torch.tanh(self.encoder(x)))


class TiedDecoder(nnx.Module):
    """A decoder whose ``weight`` is the encoder's nnx.Param itself (one object, two paths)."""

    def __init__(self, weight, *, param_dtype):
        self.weight = weight  # (V, E), torch's layout of Linear(E, V).weight
        self.bias = nnx.Param(jnp.zeros((V,), param_dtype))

    def __call__(self, h):
        return h @ self.weight[...].T + self.bias[...]


class Tied(nnx.Module):
    def __init__(self, *, param_dtype, rngs):
        self.encoder = layers.Embedding(V, E, param_dtype=param_dtype, rngs=rngs)
        self.decoder = TiedDecoder(self.encoder.weight, param_dtype=param_dtype)

    def __call__(self, x):
        return self.decoder(jnp.tanh(self.encoder(x)))


def test_tied_parameters_are_one_leaf_with_the_summed_gradient(dtype, torch_dtype):
    torch_model = TorchTied().to(torch_dtype)
    model = Tied(param_dtype=jax_dtype(dtype), rngs=nnx.Rngs(0))
    model.encoder.weight[...] = jnp.asarray(torch_model.encoder.weight.detach().numpy().copy())
    model.decoder.bias[...] = jnp.asarray(torch_model.decoder.bias.detach().numpy().copy())
    x, y = torch.randint(0, V, (9,)), torch.randint(0, V, (9,))
    optimizer = torch.optim.Adam(torch_model.parameters(), lr=0.05)
    torch_losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(torch_model(x), y)
        loss.backward()
        optimizer.step()
        torch_losses.append(loss.item())

    state = train.TrainState.create(model, optim.adam(lr=0.05))
    assert len(jax.tree.leaves(state.params)) == 2  # the tied weight once, the decoder bias
    step = train.make_train_step(losses.CrossEntropyLoss())
    fnml_losses = []
    for _ in range(4):
        state, loss = step(state, x.numpy(), y.numpy())
        fnml_losses.append(float(loss))
    trained = state.model()
    assert trained.encoder.weight is trained.decoder.weight  # still tied after training
    _close("per-step loss", np.max(np.abs(np.array(fnml_losses) - np.array(torch_losses))), dtype)
    weight = np.asarray(trained.encoder.weight[...])
    _close("tied weight", max_abs_diff(weight, torch_model.encoder.weight.detach().numpy()), dtype)
    bias = np.asarray(trained.decoder.bias[...])
    _close("decoder bias", max_abs_diff(bias, torch_model.decoder.bias.detach().numpy()), dtype)


# ---- train.accuracy -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 4), (3, 4, 5)], ids=["N-C", "N-C-d"])
def test_accuracy_matches_torch_argmax_with_ignore_index(shape):
    logits = torch.randn(*shape, dtype=torch.float64)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]))
    target.view(-1)[::3] = -100
    kept = target != -100
    expected = ((logits.argmax(1) == target) & kept).sum().item() / kept.sum().item()
    assert float(train.accuracy(logits.numpy(), target.numpy())) == pytest.approx(expected, abs=1e-15)
    all_kept = (logits.argmax(1) == target.clamp(min=0)).double().mean().item()
    assert float(train.accuracy(logits.numpy(), target.clamp(min=0).numpy(), ignore_index=-1)) == pytest.approx(
        all_kept, abs=1e-15
    )


def test_accuracy_as_a_fit_metric_and_its_errors():
    X = np.random.default_rng(0).normal(size=(12, 2))
    Y = (X[:, 0] > 0).astype(np.int32)
    model = layers.Sequential(layers.Linear(2, 2, param_dtype=jnp.float64, rngs=nnx.Rngs(0)))
    result = train.fit(model, optim.adam(lr=0.1), losses.CrossEntropyLoss(), X, Y, epochs=3,
                       validation=(X, Y), metrics={"accuracy": train.accuracy}, verbose=False)  # fmt: skip
    state = result.state
    assert result.history["val_accuracy"][-1] == float(train.accuracy(state.model().eval()(X), Y))
    with pytest.raises(ValueError, match="accuracy: output \\(N, C, ...\\) and target \\(N, ...\\) shapes"):
        train.accuracy(np.ones((3, 2)), np.ones((4,), np.int32))
    with pytest.raises(TypeError, match="accuracy: target must hold integer class indices"):
        train.accuracy(np.ones((3, 2)), np.ones((3,)))
    with pytest.raises(TypeError, match="accuracy: ignore_index must be an int"):
        train.accuracy(np.ones((3, 2)), np.ones((3,), np.int32), ignore_index=0.5)


# ---- argument errors of the new forms ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: train.make_train_step(), TypeError, "give exactly one of criterion .* got neither"),
        (lambda: train.make_train_step(MSE, loss_fn=lm_loss), TypeError, "got both"),
        (lambda: train.make_train_step(loss_fn=3), TypeError, "loss_fn must be callable"),
        (lambda: train.make_train_step(MSE, has_aux=True), ValueError, "has_aux=True needs the general form"),
        (lambda: train.make_train_step(loss_fn=lm_loss, has_aux=1), TypeError, "has_aux must be a bool"),
        (lambda: train.make_eval_step(MSE, loss_fn=lm_loss), TypeError, "takes no criterion or metrics"),
        (lambda: train.make_train_step(MSE, autocast="int8"), ValueError, "autocast must be one of"),
        (lambda: train.TrainState.create(layers.SimpleNN(rngs=nnx.Rngs(0)), "adam"), TypeError, "or an optax"),
    ],
    ids=["neither", "both", "loss-fn-type", "aux-short-form", "aux-type", "eval-both", "autocast", "tx"],
)
def test_step_form_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"criterion": None}, TypeError, "give a criterion\\(output, target\\) or loss_fn="),
        ({"loss_fn": lambda m, x, y: 0.0}, TypeError, "not both"),
        ({"criterion": None, "loss_fn": lambda m, x, y: 0.0}, TypeError, "pass the arrays as data="),
        ({"criterion": None, "X": None, "Y": None, "loss_fn": lambda m, x: 0.0, "data": np.ones(3)}, TypeError,
         "needs data=\\(array, ...\\)"),
        ({"data": (np.ones((4, 2)),)}, TypeError, "data= goes with loss_fn="),
        ({"Y": None}, TypeError, "the short form needs X and Y"),
        ({"X": (np.ones((4, 2)), np.ones((5, 2)))}, ValueError, "same number of samples"),
        ({"criterion": None, "X": None, "Y": None, "loss_fn": lambda m, x: 0.0, "data": (np.ones((4, 2)),),
          "metrics": {"a": train.accuracy}}, TypeError, "metrics= need the short form"),
    ],
    ids=["no-loss", "both", "loss-fn-with-xy", "data-not-tuple", "data-with-criterion", "no-y", "uneven", "metrics"],
)  # fmt: skip
def test_fit_form_errors(overrides, error, match):
    kwargs = dict(criterion=MSE, X=np.ones((4, 2), np.float32), Y=np.ones((4, 1), np.float32))
    kwargs.update(overrides)
    with pytest.raises(error, match=match):
        train.fit(layers.SimpleNN(rngs=nnx.Rngs(0)), optim.sgd(lr=0.1), epochs=1, verbose=False, **kwargs)
