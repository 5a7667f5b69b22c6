"""from_torch's capture against real torch: parameter identity, modes, random ops, inputs, and every error."""

from __future__ import annotations

import copy
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from flax import nnx
from test_porting_corpus import GCN, GPT, BertEncoder, FineTune, ResNetTiny, RNNModel

from fnml import interop, layers, losses, optim, parity, train


def _line_of(function, text):
    """The source line number of ``text`` inside ``function`` (so error tests name the real line)."""
    lines, start = inspect.getsourcelines(function)
    for offset, line in enumerate(lines):
        if text in line:
            return start + offset
    raise AssertionError(f"{text!r} not in {function.__name__}")


def _j(tensor):
    return jnp.asarray(tensor.detach().numpy())


@nnx.jit
def _run(twin, *args):
    """``twin(*args)`` as one jitted program (op-by-op dispatch compiles every primitive separately); the twin's
    state updates (rng streams, BatchNorm statistics) are written back to it, as an eager call does."""
    return twin(*args)


# ----------------------------------------------------------------------------------------------------
# Tied parameters
# ----------------------------------------------------------------------------------------------------


def test_tied_weights_are_one_parameter_with_the_summed_gradient():
    model = RNNModel().double()
    tokens = torch.randint(0, 12, (5, 3))
    hidden = model.init_hidden(3)
    twin = interop.from_torch(model, tokens, hidden)
    # One nnx.Param under both torch names: Embedding's weight IS the decoder's weight.
    assert twin.decoder.weight is twin.encoder.weight
    _, params, _ = nnx.split(twin, nnx.Param, ...)
    assert len(jax.tree.leaves(params)) == len(list(model.parameters()))  # torch counts the tied tensor once
    criteria = (lambda out, y: F.nll_loss(out[0], y), lambda out, y: losses.nll_loss(out[0], y))
    report = parity.compare_gradients(model, twin, (tokens, hidden), torch.randint(0, 12, (15,)), criteria)
    # torch's tied weight has ONE gradient, the sum of the embedding's and the decoder's contributions.
    assert [row.name for row in report.parameters] == [n for n, _ in model.named_parameters()]  # tied: one row
    assert report.max_abs_diff <= 1e-12


def test_tied_state_dict_round_trips_both_ways_bit_for_bit():
    model = GPT().double()
    twin = interop.from_torch(model, torch.randint(0, 11, (2, 6)))
    ours, theirs = interop.state_dict(twin), model.state_dict()
    assert list(ours) == list(theirs)  # the tied tensor under both names, as torch lists it
    for name in theirs:
        assert np.array_equal(ours[name], theirs[name].numpy()), name
    # fnml -> torch: a fresh torch model loads the twin's dict and holds the same bits.
    fresh = GPT().double()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in ours.items()})
    assert fresh.transformer.wte.weight is fresh.lm_head.weight
    assert torch.equal(fresh.lm_head.weight, model.lm_head.weight)
    # torch -> fnml: new values under ONE of the names update the shared parameter (the other name is optional).
    new = torch.randn_like(model.lm_head.weight)
    interop.load_state_dict(
        twin, {k: v for k, v in theirs.items() if k != "transformer.wte.weight"} | {"lm_head.weight": new}
    )
    assert np.array_equal(np.asarray(twin.transformer.wte.weight[...]), new.numpy())


def test_tied_training_gets_one_update_like_torch():
    """word_language_model's loop: truncated BPTT with the hidden state carried (detached) across steps."""
    model = RNNModel().double()
    twin = interop.from_torch(model, torch.randint(0, 12, (5, 2)), model.init_hidden(2))
    generator = torch.Generator().manual_seed(3)
    batches = [
        (torch.randint(0, 12, (5, 2), generator=generator), torch.randint(0, 12, (10,), generator=generator))
        for _ in range(6)
    ]

    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    hidden = model.init_hidden(2)
    torch_losses = []
    for x, y in batches:
        hidden = tuple(h.detach() for h in hidden)  # repackage_hidden
        opt.zero_grad()
        out, hidden = model(x, hidden)
        loss = F.nll_loss(out, y)
        loss.backward()
        opt.step()
        torch_losses.append(loss.item())

    def lm_loss(m, x, y, hidden):
        out, hidden = m(x, hidden)
        return losses.nll_loss(out, y), hidden

    state = train.TrainState.create(twin, optim.sgd(lr=0.5))
    step = train.make_train_step(loss_fn=lm_loss, has_aux=True)
    hidden = tuple(jnp.zeros((2, 2, 6)) for _ in range(2))
    fnml_losses = []
    for x, y in batches:
        state, loss, hidden = step(state, _j(x), _j(y), hidden)
        fnml_losses.append(float(loss))
    np.testing.assert_allclose(fnml_losses, torch_losses, rtol=0, atol=1e-10)
    trained = interop.state_dict(state.model())
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(trained[name], value.numpy(), rtol=0, atol=1e-10, err_msg=name)


# ----------------------------------------------------------------------------------------------------
# Frozen parameters, buffers, names
# ----------------------------------------------------------------------------------------------------


def test_requires_grad_false_is_frozen_and_untouched_by_adamw_weight_decay():
    model = FineTune().double()
    twin = interop.from_torch(model, torch.randn(2, 2, 6, 6, dtype=torch.float64))
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"backbone.0.weight", "backbone.0.bias"}
    assert layers.is_frozen(None, twin.backbone[0].kernel) and layers.is_frozen(None, twin.backbone[0].bias)
    assert layers.is_trainable(None, twin.fc.kernel)
    before = interop.state_dict(twin)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1, weight_decay=0.5)
    state = train.TrainState.create(twin, optim.adamw(lr=0.1, weight_decay=0.5))
    step = train.make_train_step(losses.MSELoss())
    for _ in range(3):
        x, y = torch.randn(4, 2, 6, 6, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
        state, _ = step(state, _j(x), _j(y))
    after = interop.state_dict(state.model())
    for name in frozen:
        assert np.array_equal(after[name], before[name]), name  # no gradient, no update, no weight decay
        assert np.array_equal(after[name], model.state_dict()[name].numpy())
    np.testing.assert_allclose(after["fc.weight"], model.fc.weight.detach().numpy(), rtol=0, atol=1e-10)


def test_buffers_stay_buffers_and_non_persistent_ones_stay_out_of_state_dict():
    model = BertEncoder().double()
    twin = interop.from_torch(model, torch.randint(1, 13, (2, 6)))
    assert "position_ids" not in model.state_dict()
    assert list(interop.state_dict(twin)) == list(model.state_dict())
    assert isinstance(twin.position_ids, nnx.BatchStat)  # still held (the forward slices it), not a parameter


def test_named_children_keep_torch_names():
    model = ResNetTiny().double()
    twin = interop.from_torch(model, torch.randn(2, 2, 8, 8, dtype=torch.float64))
    assert [name for name, _ in interop.named_layers(twin)][:3] == ["conv1", "bn1", "relu"]
    assert "layer2.0.downsample.1.running_mean" in interop.state_dict(twin)


def test_capture_leaves_the_torch_module_untouched():
    model = ResNetTiny().double().train()
    before = copy.deepcopy(model.state_dict())
    interop.from_torch(model, torch.randn(2, 2, 8, 8, dtype=torch.float64))
    assert model.training and all(m.training for m in model.modules())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_first_divergence_reports_per_module_on_a_captured_twin():
    model = ResNetTiny().double().eval()
    twin = interop.from_torch(model, torch.randn(2, 2, 8, 8, dtype=torch.float64)).eval()
    report = parity.first_divergence(model, twin, torch.randn(3, 2, 8, 8, dtype=torch.float64))
    assert report.first_divergent is None
    compared = [row.name for row in report.layers if row.status == "ok"]
    assert {"conv1", "bn1", "layer2.0.conv1", "layer2.0.downsample.0", "fc"} <= set(compared)


def test_compare_forward_takes_nested_inputs_and_kwargs():
    model = BertEncoder().double().eval()
    ids = torch.randint(1, 13, (2, 6))
    twin = interop.from_torch(model, ids, attention_mask=torch.ones(2, 6, dtype=torch.long)).eval()
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[:, 4:] = 0
    report = parity.compare_forward(model, twin, torch.randint(1, 13, (4, 6)), kwargs={"attention_mask": mask})
    assert report.max_abs_diff <= 1e-12
    with pytest.raises(TypeError, match="kwargs must be a dict"):
        parity.compare_forward(model, twin, ids, kwargs=[mask])


# ----------------------------------------------------------------------------------------------------
# train() / eval() and random ops
# ----------------------------------------------------------------------------------------------------


class TrainingBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        x = self.bn(self.fc(x))
        if self.training:
            x = x * 2.0
        return F.dropout(x, 0.5, training=self.training)


@pytest.mark.parametrize("ported_in", ["train", "eval"])
def test_train_and_eval_switch_like_torch_whatever_the_mode_at_port_time(ported_in):
    model = TrainingBranch().double()
    model.train(ported_in == "train")
    twin = interop.from_torch(model, torch.randn(3, 4, dtype=torch.float64))
    assert twin.training == (ported_in == "train")
    x = torch.randn(64, 4, dtype=torch.float64)
    model.eval()
    twin.eval()
    assert parity.compare_forward(model, twin, x).max_abs_diff <= 1e-12  # running stats, no branch, no dropout
    twin.train()
    out = np.asarray(_run(twin, _j(x)))
    zeros = np.mean(out == 0)
    assert 0.35 < zeros < 0.65  # F.dropout(p=0.5) active in training mode
    # Kept entries: BatchNorm on batch statistics, the training-only "* 2", the 1/(1-p) scale.
    with torch.no_grad():
        expected = model.bn.train()(model.fc(x)).numpy() * 2.0 * 2.0
    kept = out != 0
    np.testing.assert_allclose(out[kept], expected[kept], rtol=1e-12)


class RandomOps(nn.Module):
    def forward(self, x):
        noise = torch.randn_like(x)
        uniform = torch.rand(x.size(0), 3, dtype=x.dtype)
        coins = torch.bernoulli(torch.full_like(x, 0.25))
        draws = torch.multinomial(torch.tensor([0.1, 0.2, 0.7], dtype=x.dtype).expand(x.size(0), 3), 2)
        return noise, uniform, coins, draws


def test_random_ops_draw_from_the_twins_rngs_with_torchs_distributions():
    model = RandomOps()
    twin = interop.from_torch(model, torch.zeros(4, 8, dtype=torch.float64), rngs=nnx.Rngs(7))
    noise, uniform, coins, draws = _run(twin, jnp.zeros((4000, 8)))
    assert noise.shape == (4000, 8) and uniform.shape == (4000, 3) and draws.shape == (4000, 2)
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05
    assert 0 <= float(uniform.min()) and float(uniform.max()) < 1 and abs(float(uniform.mean()) - 0.5) < 0.02
    assert abs(float(coins.mean()) - 0.25) < 0.02
    assert draws.dtype == jnp.int64 and np.all(np.asarray(draws[:, 0]) != np.asarray(draws[:, 1]))  # no replacement
    assert abs(float(np.mean(np.asarray(draws[:, 0]) == 2)) - 0.7) < 0.03
    again, *_ = _run(twin, jnp.zeros((4000, 8)))
    assert not np.array_equal(np.asarray(again), np.asarray(noise))  # the stream advances
    same, *_ = _run(
        interop.from_torch(model, torch.zeros(4, 8, dtype=torch.float64), rngs=nnx.Rngs(7)), jnp.zeros((4000, 8))
    )
    assert np.array_equal(np.asarray(same), np.asarray(noise))  # same seed, same draws


def test_gcn_functional_dropout_follows_the_mode():
    model = GCN(dropout=0.5).double().eval()
    x, adj = torch.randn(6, 5, dtype=torch.float64), torch.eye(6, dtype=torch.float64)
    twin = interop.from_torch(model, x, adj)
    assert parity.compare_forward(model, twin, (x, adj)).max_abs_diff <= 1e-12
    twin.train()
    first, second = np.asarray(_run(twin, _j(x), _j(adj))), np.asarray(_run(twin, _j(x), _j(adj)))
    assert not np.array_equal(first, second)


def test_a_model_without_random_ops_has_no_rng_state():
    twin = interop.from_torch(nn.Sequential(nn.Linear(2, 2)), torch.ones(2, 2))
    assert twin.rngs is None
    graphdef, state = nnx.split(twin)
    assert all(jnp.issubdtype(leaf.dtype, jnp.floating) for leaf in jax.tree.leaves(state))


# ----------------------------------------------------------------------------------------------------
# Errors: each names what and where
# ----------------------------------------------------------------------------------------------------


class ValueBranch(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


class Svd(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()

    def forward(self, x):
        return self.inner(x)


class Inner(nn.Module):
    def forward(self, x):
        return torch.linalg.svdvals(x)


class ViewWrite(nn.Module):
    def forward(self, x):
        y = x * 1.0
        y.t()[0] = 0.0  # through a transpose: basic-indexing views (y[:, 0] = 0.0) are captured
        return y


class LenBatch(nn.Module):
    def forward(self, x):
        return x + torch.zeros(len(x), x.size(1))


class AssertOnShape(nn.Module):
    def forward(self, x):
        assert x.shape[1] == 3, "three features"
        return x * 2


def test_a_branch_on_a_tensor_value_names_the_line_and_a_fix():
    line = _line_of(ValueBranch.forward, "if x.sum() > 0")
    with pytest.raises(
        interop.UnsupportedTorchOpError,
        match=rf"branches on a tensor's VALUE at .*test_capture.py:{line} .*torch.where",
    ):
        interop.from_torch(ValueBranch(), torch.randn(3, 4))


def test_an_unsupported_op_names_the_op_module_path_and_line():
    line = _line_of(Inner.forward, "svdvals")
    with pytest.raises(
        interop.UnsupportedTorchOpError,
        match=rf"aten.linalg_svdvals .* in module 'inner' \(Inner\), .*test_capture.py:{line}",
    ):
        interop.from_torch(Svd(), torch.randn(3, 4))


def test_an_in_place_write_into_a_view_is_refused_with_the_line():
    line = _line_of(ViewWrite.forward, "y.t()[0] = 0.0")
    with pytest.raises(interop.UnsupportedTorchOpError, match=rf"in-place write into a view.*test_capture.py:{line}"):
        interop.from_torch(ViewWrite(), torch.randn(3, 4))


def test_a_dim_fixed_by_the_forward_is_reported_at_call_time():
    twin = interop.from_torch(LenBatch(), torch.randn(3, 4))
    assert twin(jnp.ones((3, 6))).shape == (3, 6)  # the feature dim stayed free
    with pytest.raises(
        ValueError, match=r"input 'x' has shape \(5, 4\), but the forward was captured with shape \(3, 'free'\)"
    ):
        twin(jnp.ones((5, 4)))


def test_the_twin_checks_its_input_structure():
    model = RNNModel().double()
    twin = interop.from_torch(model, torch.randint(0, 12, (5, 2)), model.init_hidden(2))
    with pytest.raises(TypeError, match=r"captured for a call with 2 positional argument\(s\).*\(<1 positional>\)"):
        twin(jnp.zeros((5, 2), jnp.int64))


def test_example_inputs_that_do_not_fit_forward():
    with pytest.raises(TypeError, match="example inputs do not fit AssertOnShape.forward"):
        interop.from_torch(AssertOnShape(), torch.ones(2, 3), torch.ones(2, 3))


def test_asserts_run_and_a_failing_assert_names_its_line():
    twin = interop.from_torch(AssertOnShape(), torch.ones(2, 3))
    assert twin(jnp.ones((5, 3))).shape == (5, 3)
    line = _line_of(AssertOnShape.forward, "assert x.shape[1] == 3")
    with pytest.raises(
        interop.UnsupportedTorchOpError,
        match=rf"could not capture AssertOnShape.forward at .*test_capture.py:{line}.*three features",
    ):
        interop.from_torch(AssertOnShape(), torch.ones(2, 4))


def test_without_example_inputs_an_untraceable_forward_asks_for_them():
    with pytest.raises(
        interop.UnsupportedTorchOpError,
        match=r"without example inputs .*pass example inputs, interop.from_torch\(model, example_x\)",
    ):
        interop.from_torch(GPT())


def test_rngs_must_be_nnx_rngs():
    with pytest.raises(TypeError, match="rngs must be an nnx.Rngs or None, got int"):
        interop.from_torch(RandomOps(), torch.zeros(2, 3), rngs=0)


# ----------------------------------------------------------------------------------------------------
# Leaves that become fnml layers (channels-last inside, transposes at the edges)
# ----------------------------------------------------------------------------------------------------

LEAVES = {
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, padding=1, groups=2), (4, 7)),
    "conv_transpose1d": (lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, groups=2), (4, 7)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(3, 4, (3, 2), stride=2, padding=1, output_padding=1), (3, 5, 5)),
    "group_norm": (lambda: nn.GroupNorm(2, 4), (4, 3, 3)),
    "instance_norm2d": (lambda: nn.InstanceNorm2d(3, affine=True), (3, 4, 4)),
}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("kind", LEAVES, ids=list(LEAVES))
def test_leaves_with_an_fnml_layer_become_that_layer(kind, mode):
    build, shape = LEAVES[kind]
    model = nn.Sequential(build()).double().train(mode == "train")
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-1, 1)
    twin = interop.from_torch(model, torch.randn(2, *shape, dtype=torch.float64))
    assert type(getattr(twin, "0")).__module__.startswith("fnml.layers") and str(twin) == str(model)
    x = torch.randn(5, *shape, dtype=torch.float64)
    assert parity.compare_forward(model, twin, x).max_abs_diff <= 1e-12
    assert parity.first_divergence(model, twin, x).first_divergent is None


def test_arange_without_dtype_is_int64_like_torch():
    """``torch.arange(T)`` with no dtype (int64 in torch) ports, and the twin adds it like torch."""

    class AddPositions(torch.nn.Module):
        def forward(self, x):
            return x + torch.arange(x.size(1))

    model = AddPositions()
    twin = interop.from_torch(model, torch.zeros(2, 3, dtype=torch.float64))
    x = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_array_equal(np.asarray(twin(jnp.asarray(x))), model(torch.from_numpy(x)).numpy())


class CellLoop(nn.Module):
    """Hand-written recurrences over time with LSTMCell, GRUCell and a relu RNNCell (a time-series model)."""

    def __init__(self):
        super().__init__()
        self.lstm, self.gru, self.rnn = nn.LSTMCell(3, 4), nn.GRUCell(4, 4), nn.RNNCell(4, 4, nonlinearity="relu")
        self.head = nn.Linear(4, 1)

    def forward(self, x):  # x: (T, B, 3)
        h = c = torch.zeros(x.size(1), 4, dtype=x.dtype)
        g = torch.zeros_like(h)
        outs = []
        for t in range(x.size(0)):
            h, c = self.lstm(x[t], (h, c))
            g = self.rnn(self.gru(h, g), g)
            outs.append(self.head(g))
        return torch.stack(outs)  # (T, B, 1)


def test_recurrent_cells_run_as_fnml_cells():
    """nn.LSTMCell / GRUCell / RNNCell leaves become fnml's cells, called as layers (not lowered op by op)."""
    torch.manual_seed(0)
    model = CellLoop().double()
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    twin = interop.from_torch(model, x)
    assert [type(getattr(twin, n)) for n in ("lstm", "gru", "rnn")] == [layers.LSTMCell, layers.GRUCell, layers.RNNCell]
    program = twin._programs[1]
    assert not {n.target for n in program.nodes if n.kind == "op"} & {
        "aten.lstm_cell",
        "aten.gru_cell",
        "aten.rnn_relu_cell",
    }
    assert parity.compare_forward(model, twin, x).max_abs_diff <= 1e-12
    criteria = (lambda out, y: ((out - y) ** 2).mean(), lambda out, y: jnp.mean((out - y) ** 2))
    report = parity.compare_gradients(model, twin, x, torch.randn(4, 2, 1, dtype=torch.float64), criteria)
    assert report.max_abs_diff <= 1e-12 and report.loss_diff <= 1e-12, report
