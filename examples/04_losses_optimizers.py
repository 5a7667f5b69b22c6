"""04 losses and optimizers: the tutorial's loss and optimizer sections, side by side with fnml.

torch: ``criterion(output, target)``, then ``optimizer.zero_grad(); loss.backward(); optimizer.step()``
mutate the model. fnml: the same criterion call, then a pure update: ``jax.grad`` of a loss function,
``tx.update`` of an optax transformation with torch.optim's semantics, ``optax.apply_updates``. The
tutorial's SimpleNN gets the same weights on both sides (``interop.load_state_dict``). A table at the
end measures every optimizer over 100 training steps (float32, computed live).
Run: ``python examples/04_losses_optimizers.py``.
"""

from __future__ import annotations

import jax
import optax
import torch
import torch.nn as nn
from flax import nnx
from rich.table import Table

from fnml import interop, layers, losses, optim, tensors
from fnml.sidebyside import SideBySide, max_abs_diff, quick_mode

tour = SideBySide("04 losses & optimizers", "criterion(output, target); zero_grad / backward / step")


class SimpleNN(nn.Module):
    """The tutorial's network, in torch."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 2)  # input -> hidden
        self.fc2 = nn.Linear(2, 1)  # hidden -> output

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


# The tutorial's model, input and target, drawn once by torch; fnml gets the same weights and values.
torch.manual_seed(0)
TORCH_MODEL = SimpleNN()
INITIAL_STATE = {k: v.clone() for k, v in TORCH_MODEL.state_dict().items()}
X_TORCH = torch.randn(1, 2)
TARGET_TORCH = torch.randn(1, 1)
FNML_MODEL = interop.load_state_dict(layers.SimpleNN(rngs=nnx.Rngs(0)), INITIAL_STATE)

# ------------------------------------------------------------------------------------- loss
tour.section(
    "Forward pass and loss",
    "The criterion is called the same way. fnml's MSELoss is torch's mean squared error "
    "(optax.l2_loss would be half of it).",
)


def torch_loss():
    model = TORCH_MODEL
    x, target = X_TORCH, TARGET_TORCH
    output = model(x)
    print(output)
    criterion = nn.MSELoss()
    loss = criterion(output, target)
    print(loss)
    return output, loss


def fnml_loss():
    model = FNML_MODEL  # same weights
    x, target = tensors.from_torch(X_TORCH), tensors.from_torch(TARGET_TORCH)
    output = model(x)
    print(output)
    criterion = losses.MSELoss()
    loss = criterion(output, target)
    print(loss)
    return output, loss


t, f = tour.compare("criterion = MSELoss(); loss = criterion(output, target)", torch_loss, fnml_loss)
tour.check("output and loss", t, f, tol=1e-6)

# ------------------------------------------------------------------------------------- optimizer step
tour.section(
    "One optimizer step",
    "torch accumulates .grad into the parameters and steps in place (hence zero_grad). fnml takes the "
    "gradient of a loss *function* of the parameters and returns new parameters: nothing to zero.",
)


def torch_step():
    model, x, target = TORCH_MODEL, X_TORCH, TARGET_TORCH
    criterion = nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)

    optimizer.zero_grad()  # clear old gradients
    loss = criterion(model(x), target)
    loss.backward()  # backpropagation
    optimizer.step()  # update the parameters
    print(model.fc1.weight.data)
    return {k: v.clone() for k, v in model.state_dict().items()}


def fnml_step():
    model = FNML_MODEL
    x, target = tensors.from_torch(X_TORCH), tensors.from_torch(TARGET_TORCH)
    criterion = losses.MSELoss()
    tx = optim.adam(lr=0.001)  # torch.optim.Adam semantics
    graphdef, params = nnx.split(model)
    opt_state = tx.init(params)

    def loss_fn(params):
        return criterion(nnx.merge(graphdef, params)(x), target)

    grads = jax.grad(loss_fn)(params)  # loss.backward()
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)  # optimizer.step()
    model = nnx.merge(graphdef, params)
    print(model.fc1.kernel[...].T)  # kernel is (in, out) = torch weight.T
    return interop.state_dict(model)


t, f = tour.compare("optimizer.zero_grad(); loss.backward(); optimizer.step()", torch_step, fnml_step)
tour.check("parameters after one Adam step", t, f, tol=1e-6)

# ------------------------------------------------------------------------------------- every optimizer
STEPS = 50 if quick_mode() else 100
tour.section(
    f"Every optimizer, {STEPS} training steps",
    f"Same initial weights and data; {STEPS} steps of full-batch MSE training in float32 (jax defaults). "
    "max|diff| is the largest parameter difference after the last step.",
)

torch.manual_seed(1)
X_TRAIN = torch.randn(16, 2)
Y_TRAIN = X_TRAIN[:, :1] * X_TRAIN[:, 1:] + 0.1 * torch.randn(16, 1)

OPTIMIZERS = [
    # (torch constructor shown, torch class, fnml factory, shared keyword arguments)
    (
        "SGD(lr=0.1, momentum=0.9, nesterov=True)",
        torch.optim.SGD,
        optim.sgd,
        dict(lr=0.1, momentum=0.9, nesterov=True),
    ),
    (
        "SGD(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-3)",
        torch.optim.SGD,
        optim.sgd,
        dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-3),
    ),
    ("Adam(lr=1e-2)", torch.optim.Adam, optim.adam, dict(lr=1e-2)),
    (
        "Adam(lr=1e-2, weight_decay=1e-2, amsgrad=True)",
        torch.optim.Adam,
        optim.adam,
        dict(lr=1e-2, weight_decay=1e-2, amsgrad=True),
    ),
    ("AdamW(lr=1e-2)", torch.optim.AdamW, optim.adamw, dict(lr=1e-2)),
    (
        "RMSprop(lr=1e-2, momentum=0.5, centered=True)",
        torch.optim.RMSprop,
        optim.rmsprop,
        dict(lr=1e-2, momentum=0.5, centered=True),
    ),
    ("Adagrad(lr=0.1, lr_decay=1e-2)", torch.optim.Adagrad, optim.adagrad, dict(lr=0.1, lr_decay=1e-2)),
    ("Adadelta()", torch.optim.Adadelta, optim.adadelta, dict()),
    ("Adamax(lr=2e-2)", torch.optim.Adamax, optim.adamax, dict(lr=2e-2)),
    ("NAdam(lr=1e-2)", torch.optim.NAdam, optim.nadam, dict(lr=1e-2)),
    (
        "RAdam(lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True)",
        torch.optim.RAdam,
        optim.radam,
        dict(lr=1e-2, weight_decay=1e-2, decoupled_weight_decay=True),
    ),
]


def train_torch(torch_cls, kwargs):
    """The tutorial's loop, STEPS times; returns the final state_dict."""
    model = SimpleNN()
    model.load_state_dict(INITIAL_STATE)
    criterion = nn.MSELoss()
    optimizer = torch_cls(model.parameters(), **kwargs)
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = criterion(model(X_TRAIN), Y_TRAIN)
        loss.backward()
        optimizer.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def train_fnml(factory, kwargs):
    """The functional loop with one jitted step; returns the final state_dict in torch names."""
    model = interop.load_state_dict(layers.SimpleNN(rngs=nnx.Rngs(0)), INITIAL_STATE)
    criterion = losses.MSELoss()
    tx = factory(**kwargs)
    graphdef, params = nnx.split(model)
    opt_state = tx.init(params)
    x, y = tensors.from_torch(X_TRAIN), tensors.from_torch(Y_TRAIN)

    @jax.jit
    def step(params, opt_state):
        grads = jax.grad(lambda p: criterion(nnx.merge(graphdef, p)(x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(STEPS):
        params, opt_state = step(params, opt_state)
    return interop.state_dict(nnx.merge(graphdef, params))


table = Table(title=f"max |param diff| after {STEPS} steps (float32)", title_justify="left")
table.add_column("PyTorch")
table.add_column("fnml")
table.add_column("moved", justify="right")
table.add_column("max|diff|", justify="right")
results = []
for shown, torch_cls, factory, kwargs in OPTIMIZERS:
    torch_final = train_torch(torch_cls, kwargs)
    fnml_final = train_fnml(factory, kwargs)
    moved = max_abs_diff(INITIAL_STATE, torch_final)  # how far training took the weights
    diff = max_abs_diff(torch_final, fnml_final)
    fnml_call = f"optim.{factory.__name__}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"
    table.add_row(f"optim.{shown}", fnml_call, f"{moved:.3g}", f"{diff:.2g}")
    results.append((shown, diff))
tour.console.print(table)
for shown, diff in results:
    tour.record(f"{shown}, {STEPS} steps", diff, tol=1e-5)

tour.finish()
