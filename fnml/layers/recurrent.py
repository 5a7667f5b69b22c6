"""Recurrent layers with PyTorch's signatures, gate order, biases, initialisation and return values.

PyTorch equivalent: ``torch.nn.RNN``, ``torch.nn.LSTM``, ``torch.nn.GRU``.

Each layer is a ``flax.nnx.Module`` whose parameters follow the fnml layer attribute contract: per layer
``k`` and direction suffix ``s`` in ``("", "_reverse")``

- ``kernel_ih_l{k}{s}``: ``nnx.Param`` ``(in, G*H)`` = torch ``weight_ih_l{k}{s}.T``
- ``kernel_hh_l{k}{s}``: ``nnx.Param`` ``(H, G*H)`` = torch ``weight_hh_l{k}{s}.T``
- ``bias_ih_l{k}{s}``, ``bias_hh_l{k}{s}``: ``nnx.Param`` ``(G*H,)``, or ``None`` when ``bias=False``

with the gate blocks in torch's order (LSTM ``i, f, g, o``: G=4; GRU ``r, z, n``: G=3; RNN: G=1).

Why not ``nnx.LSTMCell`` / ``nnx.GRUCell``: flax keeps one bias per gate where torch keeps two, flax's
GRU has no hidden-side bias ``b_hn`` inside ``r * (W_hn h + b_hn)`` (0.57 off with torch weights), and
flax initialises with lecun-normal / orthogonal / zeros where torch draws everything from
``U(-1/sqrt(H), 1/sqrt(H))``. The cells below are written out, and run with ``jax.lax.scan``.

Speed (design choices; measurements in ``benchmarks/README.md``):

- the input projection of all time steps is one ``(T*N, in) @ (in, G*H)`` matmul before the recurrence;
  each step does one fused ``(N, H) @ (H, G*H)`` matmul for the hidden side;
- the LSTM's four gate activations are one uniform ``s * tanh(s * gates) + (1 - s)`` pass (sigmoid as a
  scaled tanh), because XLA's CPU backend is slow on separate sigmoid/tanh calls over column slices;
- the backward pass is hand-written per cell (``jax.custom_vjp``, ``fused_backward=True``): the reverse
  loop carries only the state gradients and every weight gradient is one matmul over all steps
  afterwards (as cuDNN does), instead of JAX's per-step accumulation, which is faster than JAX's scan
  transpose. ``fused_backward=False`` keeps JAX's own differentiation (needed for forward-mode
  ``jax.jvp`` / ``jax.hessian``);
- ``unroll`` (scan iterations per loop trip) defaults to 1: larger values were not faster.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from fnml._validation import check_bool, check_choice, check_in_interval, check_ndim, check_positive_int
from fnml.functional.dropout import dropout_unchecked
from fnml.layers._facts import LayerCall, TorchFacts, cell_slots, recurrent_slots
from fnml.layers.base import Module, torch_uniform

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"]

_DIRECTION_SUFFIXES = ("", "_reverse")


# ----------------------------------------------------------------------------------------------------
# Cells. ``forward(carry, x_gates, h_gates) -> (new_carry, saved)`` for one time step, where
#   x_gates = x_t @ W_ih + b_ih (+ the part of b_hh that can be folded in), shape (N, G*H),
#   h_gates = h_{t-1} @ W_hh (+ b_hn for the GRU), shape (N, G*H),
# new_carry[0] is the step's output h_t, and ``saved`` holds what the hand-written backward reuses.
# ``backward(saved, carry, new_carry, d_new_carry) -> (d_carry, d_x_gates, d_h_gates)`` where d_carry
# excludes the path through h_gates (the recurrence adds d_h_gates @ W_hh.T), and d_h_gates=None
# means "equal to d_x_gates". W_hh stays outside the cell so that its gradient is one matmul.
# ----------------------------------------------------------------------------------------------------


class _RNNTanhCell:
    """Elman cell: h = tanh(x_gates + h_gates)."""

    @staticmethod
    def forward(carry, x_gates, h_gates):
        del carry
        return (jnp.tanh(x_gates + h_gates),), ()

    @staticmethod
    def backward(saved, carry, new_carry, d_new_carry):
        (h_new,), (d_h,) = new_carry, d_new_carry
        d_pre = d_h * (1 - h_new * h_new)  # tanh' = 1 - tanh^2
        return (jnp.zeros_like(carry[0]),), d_pre, None


class _RNNReluCell:
    """Elman cell: h = relu(x_gates + h_gates)."""

    @staticmethod
    def forward(carry, x_gates, h_gates):
        del carry
        return (jax.nn.relu(x_gates + h_gates),), ()

    @staticmethod
    def backward(saved, carry, new_carry, d_new_carry):
        (h_new,), (d_h,) = new_carry, d_new_carry
        d_pre = jnp.where(h_new > 0, d_h, jnp.zeros_like(d_h))  # relu'(0) = 0, as in torch
        return (jnp.zeros_like(carry[0]),), d_pre, None


def _lstm_gate_scales(hidden: int, dtype: Any) -> jax.Array:
    """Per-column s for the LSTM's [i, f, g, o] blocks: 1/2 on the sigmoid gates, 1 on the tanh gate g."""
    half = jnp.full((hidden,), 0.5, dtype)
    return jnp.concatenate([half, half, jnp.ones((hidden,), dtype), half])  # (4H,)


class _LSTMCell:
    """torch LSTM cell, gates i, f, g, o: c = f*c + i*g, h = o*tanh(c).

    All four activations in one uniform pass: sigmoid(x) = tanh(x / 2) / 2 + 1/2, so
    act = s * tanh(s * gates) + (1 - s) with s = 1/2 on i, f, o and s = 1 on g. XLA's CPU backend runs
    this ~2x faster than separate sigmoid/tanh calls on slices of the gate matrix (measured).
    """

    @staticmethod
    def forward(carry, x_gates, h_gates):
        _, c = carry
        scale = _lstm_gate_scales(c.shape[-1], x_gates.dtype)
        t = jnp.tanh(scale * (x_gates + h_gates))
        i, f, g, o = jnp.split(scale * t + (1 - scale), 4, axis=-1)  # (N, 4H) -> 4 x (N, H), torch order
        c_new = f * c + i * g
        h_new = o * jnp.tanh(c_new)
        return (h_new, c_new), t

    @staticmethod
    def backward(t, carry, new_carry, d_new_carry):
        _, c = carry
        _, c_new = new_carry
        d_h, d_c_next = d_new_carry
        scale = _lstm_gate_scales(c.shape[-1], t.dtype)
        i, f, g, o = jnp.split(scale * t + (1 - scale), 4, axis=-1)
        tanh_c = jnp.tanh(c_new)
        d_c = d_c_next + d_h * o * (1 - tanh_c * tanh_c)
        d_act = jnp.concatenate([d_c * g, d_c * c, d_c * i, d_h * tanh_c], axis=-1)  # (N, 4H)
        # d act / d gates = s^2 (1 - t^2): sigmoid' = a (1 - a) on i, f, o; tanh' = 1 - g^2 on g.
        d_gates = d_act * (scale * scale) * (1 - t * t)
        return (jnp.zeros_like(d_h), d_c * f), d_gates, None


class _GRUCell:
    """torch GRU cell, gates r, z, n: n = tanh(x_n + r * (W_hn h + b_hn)), h = (1 - z) * n + z * h."""

    @staticmethod
    def forward(carry, x_gates, h_gates):
        (h,) = carry
        hidden = h.shape[-1]
        # r and z together: sigmoid(x) = tanh(x / 2) / 2 + 1/2 on the (N, 2H) block.
        rz = 0.5 * jnp.tanh(0.5 * (x_gates[:, : 2 * hidden] + h_gates[:, : 2 * hidden])) + 0.5
        r, z = rz[:, :hidden], rz[:, hidden:]
        h_n = h_gates[:, 2 * hidden :]
        n = jnp.tanh(x_gates[:, 2 * hidden :] + r * h_n)
        h_new = (1 - z) * n + z * h
        return (h_new,), (rz, n, h_n)

    @staticmethod
    def backward(saved, carry, new_carry, d_new_carry):
        rz, n, h_n = saved
        (h,), (d_h,) = carry, d_new_carry
        hidden = h.shape[-1]
        r, z = rz[:, :hidden], rz[:, hidden:]
        d_n_pre = d_h * (1 - z) * (1 - n * n)
        d_r = d_n_pre * h_n
        d_z = d_h * (h - n)
        d_rz_pre = jnp.concatenate([d_r, d_z], axis=-1) * rz * (1 - rz)  # sigmoid' = s (1 - s)
        d_x_gates = jnp.concatenate([d_rz_pre, d_n_pre], axis=-1)  # (N, 3H)
        d_h_gates = jnp.concatenate([d_rz_pre, d_n_pre * r], axis=-1)  # (N, 3H)
        return (d_h * z,), d_x_gates, d_h_gates


# ----------------------------------------------------------------------------------------------------
# One direction of one layer: the recurrence over time, with a hand-written backward pass.
# ----------------------------------------------------------------------------------------------------


def _hidden_gates(h: jax.Array, kernel_hh: jax.Array, bias_hn: jax.Array | None) -> jax.Array:
    """h @ W_hh, plus b_hn on the n block (GRU only): (N, H) -> (N, G*H)."""
    gates = h @ kernel_hh
    if bias_hn is not None:
        hidden = bias_hn.shape[-1]
        gates = gates.at[:, 2 * hidden :].add(bias_hn)
    return gates


def _scan_forward(cell, unroll, reverse, x_gates, carry0, kernel_hh, bias_hn):
    """Forward scan: per-step new carries (T, N, H) each (the first is the output) and saved values."""

    def step(carry, x_gates_t):
        new_carry, saved = cell.forward(carry, x_gates_t, _hidden_gates(carry[0], kernel_hh, bias_hn))
        return new_carry, (new_carry, saved)

    final, (carries, saved) = jax.lax.scan(step, carry0, x_gates, reverse=reverse, unroll=unroll)
    return final, carries, saved


def _recurrence_autodiff(cell, unroll, reverse, x_gates, carry0, kernel_hh, bias_hn):
    """x_gates (T, N, G*H), carry0 tuple of (N, H) -> (outputs (T, N, H), final carry); JAX's autodiff."""
    final, carries, _ = _scan_forward(cell, unroll, reverse, x_gates, carry0, kernel_hh, bias_hn)
    return carries[0], final


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _recurrence(cell, unroll, reverse, x_gates, carry0, kernel_hh, bias_hn):
    """Same as ``_recurrence_autodiff``, differentiated by the cells' hand-written backward."""
    return _recurrence_autodiff(cell, unroll, reverse, x_gates, carry0, kernel_hh, bias_hn)


def _recurrence_fwd(cell, unroll, reverse, x_gates, carry0, kernel_hh, bias_hn):
    final, carries, saved = _scan_forward(cell, unroll, reverse, x_gates, carry0, kernel_hh, bias_hn)
    return (carries[0], final), (carry0, carries, saved, kernel_hh, bias_hn)


def _recurrence_bwd(cell, unroll, reverse, residuals, cotangents):
    carry0, carries, saved, kernel_hh, bias_hn = residuals
    d_outputs, d_final = cotangents
    # The carry entering step t: carry0, then the previous step's result (the next one when reversed).
    if reverse:
        carries_before = tuple(jnp.concatenate([seq[1:], c0[None]]) for seq, c0 in zip(carries, carry0))
    else:
        carries_before = tuple(jnp.concatenate([c0[None], seq[:-1]]) for seq, c0 in zip(carries, carry0))
    kernel_hh_t = kernel_hh.T  # (H, G*H) -> (G*H, H), once outside the loop

    def step(d_carry, inputs):
        saved_t, carry_t, new_carry_t, d_out_t = inputs
        d_new = (d_carry[0] + d_out_t, *d_carry[1:])
        d_carry_prev, d_x_gates_t, d_h_gates_t = cell.backward(saved_t, carry_t, new_carry_t, d_new)
        # h_{t-1} also fed h_gates = h_{t-1} @ W_hh: add that path's gradient.
        d_h_through_gates = d_x_gates_t if d_h_gates_t is None else d_h_gates_t
        d_h_prev = d_carry_prev[0] + d_h_through_gates @ kernel_hh_t
        # Stack d_h_gates only where it differs from d_x_gates (GRU): less memory traffic per step.
        return (d_h_prev, *d_carry_prev[1:]), (d_x_gates_t, d_h_gates_t)

    # The backward recurrence runs in the opposite time direction to the forward one.
    d_carry0, (d_x_gates, d_h_gates) = jax.lax.scan(
        step, d_final, (saved, carries_before, carries, d_outputs), reverse=not reverse, unroll=unroll
    )
    d_h_gates = d_x_gates if d_h_gates is None else d_h_gates
    time, batch, gate_width = d_h_gates.shape
    hidden = kernel_hh.shape[0]
    h_before = carries_before[0].reshape(time * batch, hidden)  # (T, N, H) -> (T*N, H)
    d_h_gates_flat = d_h_gates.reshape(time * batch, gate_width)  # (T, N, G*H) -> (T*N, G*H)
    # Every step's weight gradient in one matmul: sum_t h_{t-1}^T @ d_h_gates_t, (H, G*H).
    d_kernel_hh = (d_h_gates_flat.T @ h_before).T
    d_bias_hn = None if bias_hn is None else d_h_gates_flat[:, 2 * hidden :].sum(axis=0)
    return d_x_gates, d_carry0, d_kernel_hh, d_bias_hn


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


class _Settings(NamedTuple):
    """Static (hashable) description of a recurrent stack, the jit cache key of ``_run_layers``."""

    cell: type
    num_layers: int
    num_directions: int
    hidden_size: int
    gru: bool
    unroll: int | bool
    fused_backward: bool
    dropout: float  # 0.0 unless dropout is active (training mode, p > 0)
    dtype: Any


def _input_gates(x, kernel_ih, bias_ih, bias_hh, *, gru: bool, dtype: Any):
    """x (M, in) -> (x @ W_ih + b_ih + b_hh (M, G*H), b_hn or None): the input side of every cell.

    GRU: b_hr, b_hz fold into the input side; b_hn stays inside r * (W_hn h + b_hn) and is returned.
    """
    x_gates = x @ kernel_ih
    bias_hn = None
    if bias_ih is not None:
        bias_ih, bias_hh = bias_ih.astype(dtype), bias_hh.astype(dtype)
        if gru:
            hidden = bias_hh.shape[0] // 3
            bias_hn = bias_hh[2 * hidden :]
            bias_hh = bias_hh.at[2 * hidden :].set(0)
        x_gates = x_gates + (bias_ih + bias_hh)
    return x_gates, bias_hn


def _layer_direction(settings: _Settings, weights: dict, name: str, layer_input, carry0):
    """One direction of one layer: layer_input (T, N, in) -> (outputs (T, N, H), final carry)."""
    time, batch, features = layer_input.shape
    dtype = settings.dtype
    kernel_hh = weights[f"kernel_hh_{name}"].astype(dtype)
    # Hoisted input projection: every time step in one matmul, outside the recurrence.
    x_flat = layer_input.reshape(time * batch, features)  # (T, N, in) -> (T*N, in)
    x_gates, bias_hn = _input_gates(
        x_flat,
        weights[f"kernel_ih_{name}"].astype(dtype),
        weights.get(f"bias_ih_{name}"),
        weights.get(f"bias_hh_{name}"),
        gru=settings.gru,
        dtype=dtype,
    )
    x_gates = x_gates.reshape(time, batch, -1)  # (T*N, G*H) -> (T, N, G*H)
    recurrence = _recurrence if settings.fused_backward else _recurrence_autodiff
    reverse = name.endswith("_reverse")
    return recurrence(settings.cell, settings.unroll, reverse, x_gates, carry0, kernel_hh, bias_hn)


@functools.partial(jax.jit, static_argnames="settings")
def _run_layers(weights: dict, x: jax.Array, states: tuple, dropout_key, *, settings: _Settings):
    """The stack: x (T, N, in), states tuple of (L*D, N, H) -> (output (T, N, D*H), final states).

    Jitted with static settings so that eager calls compile once per shape; inside a user's jit it is
    inlined.
    """
    x = x.astype(settings.dtype)
    states = tuple(s.astype(settings.dtype) for s in states)
    finals = []  # per (layer, direction): final carry tuple
    layer_input = x
    for layer in range(settings.num_layers):
        outputs = []
        for direction, suffix in enumerate(_DIRECTION_SUFFIXES[: settings.num_directions]):
            index = layer * settings.num_directions + direction
            carry0 = tuple(s[index] for s in states)
            out, final = _layer_direction(settings, weights, f"l{layer}{suffix}", layer_input, carry0)
            outputs.append(out)
            finals.append(final)
        # Directions side by side on the feature axis: (T, N, H) x D -> (T, N, D*H), torch's layout.
        layer_input = outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs, axis=-1)
        if layer < settings.num_layers - 1 and settings.dropout > 0:
            # p was checked at construction: the dropout core, not the checking op.
            layer_key = jax.random.fold_in(dropout_key, layer)
            layer_input = dropout_unchecked(layer_input, settings.dropout, True, layer_key)
    # (L*D) x (N, H) -> (L*D, N, H), one stack per state (h, and c for LSTM)
    final_states = tuple(jnp.stack([carry[i] for carry in finals]) for i in range(len(states)))
    return layer_input, final_states


# ----------------------------------------------------------------------------------------------------
# Modules.
# ----------------------------------------------------------------------------------------------------


class _RecurrentBase(Module):
    """Shared construction, input checks and the layer / direction loop of RNN, LSTM and GRU."""

    _gate_count: int = 1
    _has_cell_state: bool = False

    def extra_repr(self) -> str:
        """torch's ``RNNBase.extra_repr``: sizes, then the non-default settings (torch omits nonlinearity)."""
        parts = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        if self.bias is not True:
            parts.append(f"bias={self.bias}")
        if self.batch_first is not False:
            parts.append(f"batch_first={self.batch_first}")
        if self.dropout != 0:
            parts.append(f"dropout={self.dropout}")
        if self.bidirectional is not False:
            parts.append(f"bidirectional={self.bidirectional}")
        return ", ".join(parts)

    def _build(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        *,
        bias: bool,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        dtype: Any,
        param_dtype: Any,
        unroll: int | bool,
        fused_backward: bool,
        rngs: nnx.Rngs,
    ) -> None:
        """Check the settings, draw every parameter from U(-1/sqrt(H), 1/sqrt(H)) as torch does."""
        name = type(self).__name__
        check_positive_int("input_size", input_size, where=name)
        check_positive_int("hidden_size", hidden_size, where=name)
        check_positive_int("num_layers", num_layers, where=name)
        check_in_interval("dropout", dropout, 0.0, 1.0, closed_high=True, where=name)
        # torch raises its TypeError for bias and batch_first only; bidirectional=1 would silently work there.
        for flag, value in (
            ("bias", bias),
            ("batch_first", batch_first),
            ("bidirectional", bidirectional),
            ("fused_backward", fused_backward),
        ):
            check_bool(flag, value, where=name)
        if not (isinstance(unroll, bool) or (isinstance(unroll, int) and unroll >= 1)):
            raise ValueError(f"{name}: unroll must be a positive integer or a bool, got unroll={unroll!r}")
        if dropout > 0 and num_layers == 1:
            # Same warning as torch: the dropout sits between layers, so one layer never uses it.
            warnings.warn(
                f"{name}: dropout adds dropout after all but the last recurrent layer, so non-zero dropout "
                f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                UserWarning,
                stacklevel=3,
            )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.unroll = unroll
        self.fused_backward = fused_backward
        # torch modules start in training mode; nnx's train()/eval() flip this attribute.
        self.deterministic = False

        num_directions = 2 if bidirectional else 1
        gate_width = self._gate_count * hidden_size
        bound = 1.0 / math.sqrt(hidden_size)  # torch: stdv = 1 / sqrt(hidden_size) for every parameter
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * num_directions
            for suffix in _DIRECTION_SUFFIXES[:num_directions]:
                # Same order as torch's _flat_weights_names: weight_ih, weight_hh, bias_ih, bias_hh.
                shapes = {
                    f"kernel_ih_l{layer}{suffix}": (layer_input, gate_width),
                    f"kernel_hh_l{layer}{suffix}": (hidden_size, gate_width),
                    f"bias_ih_l{layer}{suffix}": (gate_width,),
                    f"bias_hh_l{layer}{suffix}": (gate_width,),
                }
                for attribute, shape in shapes.items():
                    if attribute.startswith("bias") and not bias:
                        setattr(self, attribute, None)
                        continue
                    value = torch_uniform(bound)(rngs.params(), shape, param_dtype)
                    setattr(self, attribute, nnx.Param(value))
        # Inter-layer dropout masks come from the 'dropout' stream (falls back to 'default').
        self.rngs = rngs["dropout"].fork() if dropout > 0 else None

    # -- input handling --------------------------------------------------------------------------

    def _expected_state_shape(self, batch: int | None) -> tuple[int, ...]:
        """(num_layers * num_directions, N, H), or without N for unbatched input."""
        layers = self.num_layers * (2 if self.bidirectional else 1)
        return (layers, self.hidden_size) if batch is None else (layers, batch, self.hidden_size)

    def _check_state(self, label: str, value: Any, batch: int | None) -> jax.Array:
        """An initial state must have torch's shape exactly; unbatched states get a batch axis of 1."""
        name = type(self).__name__
        value = jnp.asarray(value)
        expected = self._expected_state_shape(batch)
        if value.shape != expected:
            raise ValueError(
                f"{name}: {label} must have shape {expected} "
                f"(num_layers * num_directions, {'' if batch is None else 'batch, '}hidden_size), "
                f"got shape {value.shape}"
            )
        return value[:, None, :] if batch is None else value  # (L*D, H) -> (L*D, 1, H)

    def _initial_states(self, hx: Any, batch: int | None) -> tuple[jax.Array, ...] | None:
        """Parse ``hx`` (h_0, or (h_0, c_0) for LSTM) into a tuple of (L*D, N, H) arrays, or None."""
        if hx is None:
            return None
        name = type(self).__name__
        if self._has_cell_state:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{name}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
            return tuple(self._check_state(label, v, batch) for label, v in zip(("h_0", "c_0"), hx))
        if isinstance(hx, (tuple, list)):
            raise TypeError(f"{name}: hx must be one array h_0, got a {type(hx).__name__}")
        return (self._check_state("h_0", hx, batch),)

    # -- the computation -------------------------------------------------------------------------

    def _cell(self) -> type:
        raise NotImplementedError

    def _parameter_names(self) -> list[str]:
        """Present parameter attributes, in torch order (weight_ih, weight_hh, bias_ih, bias_hh per layer)."""
        names = []
        for layer in range(self.num_layers):
            for suffix in _DIRECTION_SUFFIXES[: 2 if self.bidirectional else 1]:
                for kind in ("kernel_ih", "kernel_hh", "bias_ih", "bias_hh"):
                    if getattr(self, f"{kind}_l{layer}{suffix}") is not None:
                        names.append(f"{kind}_l{layer}{suffix}")
        return names

    def __call__(self, input: jax.Array, hx: Any = None):  # noqa: A002 - torch's argument name
        """Run the stack: ``(input, hx) -> (output, h_n)`` (LSTM: ``(output, (h_n, c_n))``), as torch."""
        name = type(self).__name__
        x = jnp.asarray(input)
        check_ndim("input", x.shape, (2, 3), where=name)
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: input_size={x.shape[-1]} of the input does not match {name}(input_size={self.input_size})"
            )
        batched = x.ndim == 3
        if not batched:
            x = x[:, None, :]  # unbatched (T, in) -> (T, 1, in)
        elif self.batch_first:
            x = jnp.swapaxes(x, 0, 1)  # (N, T, in) -> (T, N, in)
        batch = x.shape[1]
        states = self._initial_states(hx, batch if batched else None)

        param_dtype = self.kernel_ih_l0[...].dtype
        dtype = self.dtype if self.dtype is not None else jnp.result_type(x.dtype, param_dtype)
        if states is None:
            zeros = jnp.zeros(self._expected_state_shape(batch), dtype)
            states = (zeros, zeros) if self._has_cell_state else (zeros,)
        # Dropout is active in training mode between layers only (as torch); one key per call.
        dropout_active = not self.deterministic and self.dropout > 0 and self.num_layers > 1
        settings = _Settings(
            cell=self._cell(),
            num_layers=self.num_layers,
            num_directions=2 if self.bidirectional else 1,
            hidden_size=self.hidden_size,
            gru=self._gate_count == 3,
            unroll=self.unroll,
            fused_backward=self.fused_backward,
            dropout=self.dropout if dropout_active else 0.0,
            dtype=jnp.dtype(dtype),
        )
        weights = {attribute: getattr(self, attribute)[...] for attribute in self._parameter_names()}
        dropout_key = self.rngs() if dropout_active else None
        output, final_states = _run_layers(weights, x, states, dropout_key, settings=settings)

        if not batched:
            output = output[:, 0, :]  # (T, 1, D*H) -> (T, D*H)
            final_states = tuple(s[:, 0, :] for s in final_states)  # (L*D, 1, H) -> (L*D, H)
        elif self.batch_first:
            output = jnp.swapaxes(output, 0, 1)  # (T, N, D*H) -> (N, T, D*H)
        if self._has_cell_state:
            return output, (final_states[0], final_states[1])
        return output, final_states[0]


_COMMON_ARGS_DOC = """
    Args:
      input_size: features of each input step ``x_t``.
      hidden_size: features of the hidden state ``h``.
      num_layers: stacked recurrent layers (layer ``k > 0`` reads layer ``k - 1``'s output).
      bias: keep both biases ``b_ih`` and ``b_hh`` (torch keeps two; flax one).
      batch_first: input and output are ``(N, T, F)`` instead of ``(T, N, F)``; states are unaffected.
      dropout: probability of zeroing each output of every layer but the last, in training mode only
        (``model.train()`` / ``model.eval()`` as in torch; masks come from the ``'dropout'`` stream of
        ``rngs``, so the same seed gives the same masks, but never torch's masks).
      bidirectional: add a reverse-time direction; outputs concatenate ``[forward, reverse]``.
      dtype: computation dtype (default: the promoted dtype of input and parameters).
      param_dtype: parameter dtype (default float32, as torch).
      unroll: time steps per iteration of the ``lax.scan`` loop (a speed knob; the math is identical).
      fused_backward: use the hand-written backward pass (weight gradients as one matmul over all
        steps; faster). It supports reverse-mode differentiation only: set ``False`` for ``jax.jvp``,
        ``jax.jacfwd`` or ``jax.hessian`` through the layer.
      rngs: ``nnx.Rngs``; ``params`` draws the initial weights, ``dropout`` the dropout masks.

    Input ``input``: ``(T, N, input_size)`` (``(N, T, input_size)`` with ``batch_first``) or unbatched
    ``(T, input_size)``. Returns ``output`` ``(T, N, D*hidden_size)`` (same batch convention) and the
    final states ``(num_layers * D, N, hidden_size)``, D = 2 if bidirectional else 1; unbatched input
    drops the N axis everywhere.
"""


class RNN(_RecurrentBase):
    __doc__ = (
        """Elman recurrent layer, ``h_t = act(x_t W_ih + b_ih + h_{t-1} W_hh + b_hh)`` with act tanh or relu.

    PyTorch equivalent: ``torch.nn.RNN(input_size, hidden_size, num_layers, nonlinearity, bias,
    batch_first, dropout, bidirectional)``.

    ``model(input, h_0=None) -> (output, h_n)``. Parameters (per layer k, direction suffix s):
    ``kernel_ih_l{k}{s}`` ``(in, H)`` = torch ``weight_ih_l{k}{s}.T``, ``kernel_hh_l{k}{s}`` ``(H, H)``,
    ``bias_ih_l{k}{s}``, ``bias_hh_l{k}{s}`` ``(H,)`` (``None`` without bias); all drawn from
    ``U(-1/sqrt(H), 1/sqrt(H))`` as in torch. Flags after ``num_layers`` are keyword-only.
"""
        + _COMMON_ARGS_DOC.replace(
            "      bias:", "      nonlinearity: ``'tanh'`` (default) or ``'relu'``.\n      bias:"
        )
        + """
    Example:
      >>> rnn = RNN(10, 20, 2, rngs=nnx.Rngs(0))
      >>> output, h_n = rnn(jnp.ones((5, 3, 10)))          # (T, N, in)
      >>> output.shape, h_n.shape
      ((5, 3, 20), (2, 3, 20))
    """
    )

    torch_facts = TorchFacts(
        "RNN",
        slots=recurrent_slots,
        layout="torch",
        settings=(
            "input_size",
            "hidden_size",
            "num_layers",
            "nonlinearity",
            "bias",
            "batch_first",
            "dropout",
            "bidirectional",
        ),
        capture=LayerCall(("aten.rnn_tanh", "aten.rnn_relu"), "rnn"),
        # torch's CPU autocast runs rnn_tanh/relu's linears in bfloat16; fnml's bfloat16 path is not yet held to it.
        autocast=False,
    )

    _gate_count = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        unroll: int | bool = 1,
        fused_backward: bool = True,
        rngs: nnx.Rngs,
    ):
        check_choice("nonlinearity", nonlinearity, ("tanh", "relu"), where="RNN")
        self.nonlinearity = nonlinearity
        self._build(
            input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first, dropout=dropout,
            bidirectional=bidirectional, dtype=dtype, param_dtype=param_dtype, unroll=unroll,
            fused_backward=fused_backward, rngs=rngs,
        )  # fmt: skip

    def _cell(self) -> type:
        return _RNNTanhCell if self.nonlinearity == "tanh" else _RNNReluCell


class LSTM(_RecurrentBase):
    __doc__ = (
        """Long short-term memory layer with torch's gate order (i, f, g, o) and both biases.

    PyTorch equivalent: ``torch.nn.LSTM(input_size, hidden_size, num_layers, bias, batch_first,
    dropout, bidirectional)`` (``proj_size`` is not supported: a non-zero value raises).

    Per step: ``[i, f, g, o] = x_t W_ih + b_ih + h_{t-1} W_hh + b_hh``;
    ``c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)``; ``h_t = sigmoid(o) * tanh(c_t)``.
    ``model(input, (h_0, c_0)=None) -> (output, (h_n, c_n))`` (torch's order; flax's carry is (c, h)).
    Parameters (per layer k, direction suffix s): ``kernel_ih_l{k}{s}`` ``(in, 4H)`` = torch
    ``weight_ih_l{k}{s}.T``, ``kernel_hh_l{k}{s}`` ``(H, 4H)``, ``bias_ih_l{k}{s}``, ``bias_hh_l{k}{s}``
    ``(4H,)`` (``None`` without bias); all drawn from ``U(-1/sqrt(H), 1/sqrt(H))`` as in torch.
    Flags after ``num_layers`` are keyword-only.
"""
        + _COMMON_ARGS_DOC
        + """
    Example:
      >>> lstm = LSTM(10, 20, 2, rngs=nnx.Rngs(0))
      >>> output, (h_n, c_n) = lstm(jnp.ones((5, 3, 10)))  # (T, N, in)
      >>> output.shape, h_n.shape, c_n.shape
      ((5, 3, 20), (2, 3, 20), (2, 3, 20))
    """
    )

    torch_facts = TorchFacts(
        "LSTM",
        slots=recurrent_slots,
        layout="torch",
        settings=("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"),
        capture=LayerCall(("aten.lstm",), "lstm"),
        autocast=False,
    )

    _gate_count = 4
    _has_cell_state = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        unroll: int | bool = 1,
        fused_backward: bool = True,
        rngs: nnx.Rngs,
    ):
        if proj_size != 0:
            raise NotImplementedError(
                f"LSTM: proj_size={proj_size!r} is not supported by fnml (only proj_size=0, torch's default)"
            )
        self._build(
            input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first, dropout=dropout,
            bidirectional=bidirectional, dtype=dtype, param_dtype=param_dtype, unroll=unroll,
            fused_backward=fused_backward, rngs=rngs,
        )  # fmt: skip

    def _cell(self) -> type:
        return _LSTMCell


class GRU(_RecurrentBase):
    __doc__ = (
        """Gated recurrent unit layer with torch's gate order (r, z, n) and torch's hidden-side bias b_hn.

    PyTorch equivalent: ``torch.nn.GRU(input_size, hidden_size, num_layers, bias, batch_first, dropout,
    bidirectional)``.

    Per step: ``r = sigmoid(x W_ir + b_ir + h W_hr + b_hr)``, ``z = sigmoid(x W_iz + b_iz + h W_hz + b_hz)``,
    ``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``, ``h_t = (1 - z) * n + z * h_{t-1}``.
    ``nnx.GRUCell`` cannot express ``b_hn`` inside ``r * (...)`` (0.57 off with torch's weights), hence
    this cell. ``model(input, h_0=None) -> (output, h_n)``. Parameters (per layer k, direction suffix s):
    ``kernel_ih_l{k}{s}`` ``(in, 3H)`` = torch ``weight_ih_l{k}{s}.T``, ``kernel_hh_l{k}{s}`` ``(H, 3H)``,
    ``bias_ih_l{k}{s}``, ``bias_hh_l{k}{s}`` ``(3H,)`` (``None`` without bias); all drawn from
    ``U(-1/sqrt(H), 1/sqrt(H))`` as in torch. Flags after ``num_layers`` are keyword-only.
"""
        + _COMMON_ARGS_DOC
        + """
    Example:
      >>> gru = GRU(10, 20, bidirectional=True, rngs=nnx.Rngs(0))
      >>> output, h_n = gru(jnp.ones((5, 3, 10)))          # (T, N, in)
      >>> output.shape, h_n.shape
      ((5, 3, 40), (2, 3, 20))
    """
    )

    torch_facts = TorchFacts(
        "GRU",
        slots=recurrent_slots,
        layout="torch",
        settings=("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional"),
        capture=LayerCall(("aten.gru",), "rnn"),
        autocast=False,
    )

    _gate_count = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        unroll: int | bool = 1,
        fused_backward: bool = True,
        rngs: nnx.Rngs,
    ):
        self._build(
            input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first, dropout=dropout,
            bidirectional=bidirectional, dtype=dtype, param_dtype=param_dtype, unroll=unroll,
            fused_backward=fused_backward, rngs=rngs,
        )  # fmt: skip

    def _cell(self) -> type:
        return _GRUCell


# ----------------------------------------------------------------------------------------------------
# Cells: one time step, the same cell math as the layers above.
# ----------------------------------------------------------------------------------------------------


class _CellBase(Module):
    """Shared construction and call of RNNCell, LSTMCell and GRUCell (torch's ``RNNCellBase``).

    Parameters follow the layers' contract without the ``_l{k}`` suffix: ``kernel_ih`` ``(in, G*H)`` = torch
    ``weight_ih.T``, ``kernel_hh`` ``(H, G*H)`` = torch ``weight_hh.T``, ``bias_ih`` / ``bias_hh`` ``(G*H,)``
    (``None`` without bias), all ~ ``U(-1/sqrt(H), 1/sqrt(H))`` drawn in torch's order.
    """

    _gate_count: int = 1
    _has_cell_state: bool = False

    def _build(self, input_size, hidden_size, bias, *, dtype, param_dtype, rngs) -> None:
        name = type(self).__name__
        check_positive_int("input_size", input_size, where=name)
        check_positive_int("hidden_size", hidden_size, where=name)
        check_bool("bias", bias, where=name)
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(f"{name}: rngs must be an nnx.Rngs, got {type(rngs).__name__}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        gate_width = self._gate_count * hidden_size
        init = torch_uniform(1.0 / math.sqrt(hidden_size))  # torch: U(-1/sqrt(H), 1/sqrt(H)) for every tensor
        self.kernel_ih = nnx.Param(init(rngs.params(), (input_size, gate_width), param_dtype))
        self.kernel_hh = nnx.Param(init(rngs.params(), (hidden_size, gate_width), param_dtype))
        if bias:
            self.bias_ih = nnx.Param(init(rngs.params(), (gate_width,), param_dtype))
            self.bias_hh = nnx.Param(init(rngs.params(), (gate_width,), param_dtype))
        else:
            self.bias_ih = None
            self.bias_hh = None

    def extra_repr(self) -> str:
        """torch's ``RNNCellBase.extra_repr``: sizes, then ``bias`` / ``nonlinearity`` when not default."""
        text = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            text += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            text += f", nonlinearity={self.nonlinearity}"
        return text

    def _cell(self) -> type:
        raise NotImplementedError

    def _state(self, label: str, value: Any, batch: int | None, dtype: Any) -> jax.Array:
        name = type(self).__name__
        value = jnp.asarray(value)
        expected = (self.hidden_size,) if batch is None else (batch, self.hidden_size)
        if value.shape != expected:
            layout = "(hidden_size,) for an unbatched input" if batch is None else "(batch, hidden_size)"
            raise ValueError(f"{name}: {label} must have shape {expected} {layout}, got shape {value.shape}")
        value = value.astype(dtype)
        return value[None] if batch is None else value  # unbatched (H,) -> (1, H)

    def __call__(self, input: jax.Array, hx: Any = None):  # noqa: A002 - torch's argument name
        """One step: ``(input, hx) -> h'`` (LSTMCell: ``(h', c')``), as torch's cells."""
        name = type(self).__name__
        x = jnp.asarray(input)
        if x.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {x.ndim}D instead (shape {x.shape})")
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: input has {x.shape[-1]} features, does not match {name}(input_size={self.input_size})"
            )
        batched = x.ndim == 2
        x = x if batched else x[None]  # unbatched (in,) -> (1, in)
        batch = x.shape[0] if batched else None
        dtype = self.dtype if self.dtype is not None else jnp.result_type(x.dtype, self.kernel_ih[...].dtype)
        x = x.astype(dtype)
        if hx is None:
            zeros = jnp.zeros((x.shape[0], self.hidden_size), dtype)
            carry = (zeros, zeros) if self._has_cell_state else (zeros,)
        elif self._has_cell_state:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{name}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
            carry = tuple(self._state(label, v, batch, dtype) for label, v in zip(("h_0", "c_0"), hx))
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"{name}: hx must be one array h_0, got a {type(hx).__name__}")
            carry = (self._state("hx", hx, batch, dtype),)
        bias_ih = None if self.bias_ih is None else self.bias_ih[...]
        bias_hh = None if self.bias_hh is None else self.bias_hh[...]
        x_gates, bias_hn = _input_gates(
            x, self.kernel_ih[...].astype(dtype), bias_ih, bias_hh, gru=self._gate_count == 3, dtype=dtype
        )
        h_gates = _hidden_gates(carry[0], self.kernel_hh[...].astype(dtype), bias_hn)
        new_carry, _ = self._cell().forward(carry, x_gates, h_gates)
        if not batched:
            new_carry = tuple(state[0] for state in new_carry)  # (1, H) -> (H,)
        return (new_carry[0], new_carry[1]) if self._has_cell_state else new_carry[0]


class RNNCell(_CellBase):
    """One Elman step: ``h' = act(x W_ih + b_ih + h W_hh + b_hh)``, act ``tanh`` or ``relu``.

    PyTorch equivalent: ``torch.nn.RNNCell(input_size, hidden_size, bias=True, nonlinearity="tanh")``.

    ``cell(input, hx=None) -> h'``: ``input`` ``(N, input_size)`` or unbatched ``(input_size,)``; ``hx``
    ``(N, hidden_size)`` / ``(hidden_size,)``, zeros when omitted. The step is the same cell function
    :class:`RNN` scans over time. Parameters: ``kernel_ih`` ``(in, H)`` = torch ``weight_ih.T``,
    ``kernel_hh`` ``(H, H)`` = torch ``weight_hh.T``, ``bias_ih``, ``bias_hh`` ``(H,)``.

    >>> cell = RNNCell(3, 4, rngs=nnx.Rngs(0))
    >>> cell(jnp.ones((2, 3))).shape, cell(jnp.ones(3)).shape
    ((2, 4), (4,))
    >>> print(RNNCell(3, 4, nonlinearity="relu", rngs=nnx.Rngs(0)))
    RNNCell(3, 4, nonlinearity=relu)
    """

    torch_facts = TorchFacts(
        "RNNCell",
        slots=cell_slots(),
        layout="torch",
        settings=("input_size", "hidden_size", "bias", "nonlinearity"),
        capture=LayerCall(("aten.rnn_tanh_cell", "aten.rnn_relu_cell"), "cell"),
        # torch's CPU autocast runs rnn_tanh/relu's linears in bfloat16; fnml's bfloat16 path is not yet held to it.
        autocast=False,
    )

    _gate_count = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        check_choice("nonlinearity", nonlinearity, ("tanh", "relu"), where="RNNCell")
        self.nonlinearity = nonlinearity
        self._build(input_size, hidden_size, bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def _cell(self) -> type:
        return _RNNTanhCell if self.nonlinearity == "tanh" else _RNNReluCell


class LSTMCell(_CellBase):
    """One LSTM step with torch's gate order (i, f, g, o) and both biases.

    PyTorch equivalent: ``torch.nn.LSTMCell(input_size, hidden_size, bias=True)``.

    ``cell(input, hx=None) -> (h', c')`` with ``hx = (h_0, c_0)`` (torch's order), zeros when omitted;
    ``input`` ``(N, input_size)`` or unbatched ``(input_size,)``. The same cell function :class:`LSTM`
    scans. Parameters: ``kernel_ih`` ``(in, 4H)`` = torch ``weight_ih.T``, ``kernel_hh`` ``(H, 4H)``,
    ``bias_ih``, ``bias_hh`` ``(4H,)``.

    >>> cell = LSTMCell(3, 4, rngs=nnx.Rngs(0))
    >>> h, c = cell(jnp.ones((2, 3)))
    >>> h.shape, c.shape
    ((2, 4), (2, 4))
    """

    torch_facts = TorchFacts(
        "LSTMCell",
        slots=cell_slots(),
        layout="torch",
        settings=("input_size", "hidden_size", "bias"),
        capture=LayerCall(("aten.lstm_cell",), "lstm_cell"),
        autocast=False,
    )

    _gate_count = 4
    _has_cell_state = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self._build(input_size, hidden_size, bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def _cell(self) -> type:
        return _LSTMCell


class GRUCell(_CellBase):
    """One GRU step with torch's gate order (r, z, n) and torch's ``b_hn`` inside ``r * (h W_hn + b_hn)``.

    PyTorch equivalent: ``torch.nn.GRUCell(input_size, hidden_size, bias=True)``.

    ``cell(input, hx=None) -> h'``; shapes as :class:`RNNCell`. The same cell function :class:`GRU` scans.
    Parameters: ``kernel_ih`` ``(in, 3H)`` = torch ``weight_ih.T``, ``kernel_hh`` ``(H, 3H)``, ``bias_ih``,
    ``bias_hh`` ``(3H,)``.

    >>> cell = GRUCell(3, 4, rngs=nnx.Rngs(0))
    >>> cell(jnp.ones((2, 3)), jnp.zeros((2, 4))).shape
    (2, 4)
    """

    torch_facts = TorchFacts(
        "GRUCell",
        slots=cell_slots(),
        layout="torch",
        settings=("input_size", "hidden_size", "bias"),
        capture=LayerCall(("aten.gru_cell",), "cell"),
        autocast=False,
    )

    _gate_count = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self._build(input_size, hidden_size, bias, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def _cell(self) -> type:
        return _GRUCell
