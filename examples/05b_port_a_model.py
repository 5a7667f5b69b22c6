"""05b port a model: move a PyTorch CNN (BatchNorm, custom forward) to fnml and prove it trains the same.

``interop.from_torch`` traces the torch model's forward with torch.fx and builds an fnml twin with the
same weights, taking the same NCHW images. Then forward outputs, gradients and a 100-step Adam training
run are compared side by side, and ``parity.compare_training`` gives the porting report.
Run: ``python examples/05b_port_a_model.py`` (``FNML_QUICK=1`` shortens the training run).
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import optax
import torch
import torch.nn as nn
import torch.nn.functional as F
from flax import nnx

from fnml import interop, losses, optim, parity
from fnml.sidebyside import SideBySide, quick_mode

tour = SideBySide("05b port a model", "from_torch: a torch CNN and its fnml twin, forward, gradients, training")
STEPS = 30 if quick_mode() else 100


class TorchCNN(nn.Module):
    """What a PyTorch user writes: layers in __init__, a custom forward with functional calls."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Sequential(nn.Linear(8 * 2 * 2, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)  # (N, 8, 4, 4)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)  # (N, 8, 2, 2)
        return self.head(x.view(x.size(0), -1))  # torch's (C, H, W) flatten order


torch.manual_seed(0)
MODEL = TorchCNN()
# Data drawn once by torch and shared with the fnml column.
BATCHES = [(torch.randn(16, 1, 8, 8), torch.randint(0, 4, (16,))) for _ in range(5)]
X, Y = BATCHES[0]
# Training runs on copies, so the forward / gradient sections see the untouched model.
TRAIN_TORCH, RECIPE_TORCH = copy.deepcopy(MODEL), copy.deepcopy(MODEL)

tour.section(
    "Port",
    "from_torch traces forward() once (torch.fx) and builds fnml layers with the same weights: nnx.Param "
    "kernels in JAX layouts, torch names in state_dict. The twin takes NCHW like torch.",
)


def torch_port():
    model = MODEL
    print(model)
    return dict(model.state_dict())


def fnml_port():
    twin = interop.from_torch(MODEL)
    print(twin)
    return interop.state_dict(twin)


t, f = tour.compare("The model and its twin", torch_port, fnml_port)
tour.check("state_dict (torch names, torch layouts)", t, f, tol=0.0)
TWIN = interop.from_torch(MODEL)

tour.section("Forward (eval mode: BatchNorm uses running statistics)")


def torch_forward():
    MODEL.eval()
    with torch.no_grad():
        out = MODEL(X)
    print(out[:2])
    return out


def fnml_forward():
    TWIN.eval()
    out = TWIN(jnp.asarray(X.numpy()))  # the same NCHW batch
    print(out[:2])
    return out


t, f = tour.compare("model(x)", torch_forward, fnml_forward)
tour.check("forward output", t, f, tol=1e-5)

tour.section("Gradients of the cross-entropy loss")


def torch_gradients():
    MODEL.zero_grad()
    loss = nn.CrossEntropyLoss()(MODEL(X), Y)
    loss.backward()
    print(f"loss {loss.item():.6f}")
    print(f"|grad conv1.weight| = {MODEL.conv1.weight.grad.norm():.6f}")
    return {name: p.grad for name, p in MODEL.named_parameters()}


def fnml_gradients():
    graphdef, params, rest = nnx.split(TWIN, nnx.Param, ...)

    def loss_fn(params):
        model = nnx.merge(graphdef, params, rest)
        return losses.cross_entropy(model(jnp.asarray(X.numpy())), jnp.asarray(Y.numpy()))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    print(f"loss {float(loss):.6f}")
    print(f"|grad conv1.weight| = {jnp.linalg.norm(grads['conv1']['kernel'][...]):.6f}")
    # Gradients under torch names and layouts (kernels transposed back):
    grad_model = nnx.merge(graphdef, grads, rest)
    return {k: v for k, v in interop.state_dict(grad_model).items() if k in dict(MODEL.named_parameters())}


t, f = tour.compare("loss.backward() vs jax.value_and_grad", torch_gradients, fnml_gradients)
tour.check("gradients (every parameter, torch layout)", t, f, tol=1e-5)

tour.section(
    f"Training: {STEPS} Adam steps on the same batches (training mode: BatchNorm batch statistics)",
    "The fnml side is one jitted pure step: nnx.split once, jax.value_and_grad, an optax optimizer with "
    "torch.optim.Adam semantics (fnml.optim.adam); BatchNorm running statistics are threaded through.",
)


def torch_training():
    model = TRAIN_TORCH.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    criterion = nn.CrossEntropyLoss()
    history = []
    for step in range(STEPS):
        x, y = BATCHES[step % len(BATCHES)]
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        if step % 25 == 0 or step == STEPS - 1:
            print(f"step {step + 1:3d}  loss {loss.item():.6f}")
    return history, dict(model.state_dict())


def fnml_training():
    twin = interop.from_torch(MODEL)
    twin.train()
    tx = optim.adam(lr=1e-2)
    graphdef, params, rest = nnx.split(twin, nnx.Param, ...)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, rest, opt_state, x, y):
        def loss_fn(params):
            model = nnx.merge(graphdef, params, jax.tree.map(lambda v: v, rest))
            loss = losses.cross_entropy(model(x), y)
            return loss, nnx.split(model, nnx.Param, ...)[2]  # updated BatchNorm statistics

        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    history = []
    for step in range(STEPS):
        x, y = BATCHES[step % len(BATCHES)]
        params, rest, opt_state, loss = train_step(
            params, rest, opt_state, jnp.asarray(x.numpy()), jnp.asarray(y.numpy())
        )
        history.append(float(loss))
        if step % 25 == 0 or step == STEPS - 1:
            print(f"step {step + 1:3d}  loss {float(loss):.6f}")
    nnx.update(twin, params, rest)
    return history, interop.state_dict(twin)


(t_losses, t_state), (f_losses, f_state) = tour.compare(f"{STEPS}-step training loop", torch_training, fnml_training)
tour.check(f"per-step losses ({STEPS} steps)", t_losses, f_losses, tol=1e-4)
tour.check("final parameters and BatchNorm buffers", t_state, f_state, tol=1e-4)

tour.section(
    "The porting recipe in three lines",
    "twin = interop.from_torch(model); train it with fnml; parity.compare_training(...) runs both "
    "step by step and names the first step and parameter that drift past the tolerance.",
)
RECIPE_TORCH.train()
twin = interop.from_torch(RECIPE_TORCH)
report = parity.compare_training(
    RECIPE_TORCH,
    torch.optim.Adam(RECIPE_TORCH.parameters(), lr=1e-2),
    nn.CrossEntropyLoss(),
    twin,
    optim.adam(lr=1e-2),
    losses.CrossEntropyLoss(),
    BATCHES,
    steps=STEPS,
)
tour.console.print(report)  # or report.print(); report.to_dict() for JSON
tour.record("compare_training: max per-step loss diff", report.max_loss_diff, tol=1e-4)
tour.record("compare_training: max final parameter diff", report.max_param_diff, tol=1e-4)
tour.record(
    "compare_training: first divergent step (0 = none)",
    float(report.first_step_exceeding is not None),
    tol=0.0,
)
divergence = parity.first_divergence(copy.deepcopy(MODEL).eval(), TWIN, X)
tour.record("first_divergence: layers that differ (eval)", float(divergence.first_divergent is not None), tol=0.0)
tour.record("check_defaults: differing settings", float(len(parity.check_defaults(MODEL, TWIN).mismatches)), tol=0.0)
tour.finish()
