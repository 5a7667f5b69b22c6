"""Flax NNX layers with PyTorch's constructor signatures, defaults, initialisation and numbers.

PyTorch equivalent: ``torch.nn``.

Every layer here is a :class:`flax.nnx.Module` that reads like ``torch.nn.Module``: ``__init__`` builds the
parameters, ``__call__`` runs the layer, ``print(model)`` shows a tree like torch's. Inside, layouts are
JAX-native:

- ``Linear.kernel`` is ``(in_features, out_features)`` (torch's ``weight.T``);
- ``Conv2d``, the pools and ``BatchNorm2d`` take channels-last images ``(N, H, W, C)``; convert torch's
  ``(N, C, H, W)`` with ``fnml.tensors.nchw_to_nhwc``; ``Conv2d.kernel`` is HWIO (torch OIHW
  transposed ``(2, 3, 1, 0)``);
- ``BatchNorm1d`` takes ``(N, C)`` or ``(N, L, C)`` (torch: ``(N, C, L)``).

Torch layouts are converted in ``fnml/interop.py`` only, keyed by the attribute names documented on each
class. ``model.train()`` / ``model.eval()`` (flax's own mechanism: they set ``deterministic`` on Dropout
and ``use_running_average`` on BatchNorm in every nested module) switch modes like torch; fnml layers
start in training mode, as torch's do.

Example::

    from flax import nnx
    from fnml import layers

    model = layers.Sequential(
        layers.Linear(4, 8, rngs=nnx.Rngs(0)), layers.ReLU(), layers.Linear(8, 1, rngs=nnx.Rngs(1))
    )
    print(model)          # Sequential(\n  (0): Linear(in_features=4, out_features=8, bias=True) ...
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from fnml._validation import check_choice, check_in_interval, check_ndim, check_number, check_positive_int

__all__ = [
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "Dropout",
    "Embedding",
    "Flatten",
    "GELU",
    "GRU",
    "Identity",
    "LSTM",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MaxPool2d",
    "Module",
    "RNN",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SimpleNN",
    "Softmax",
    "Tanh",
    "module_repr",
    "torch_uniform",
]


# --------------------------------------------------------------------------------------------------
# Printing: torch's print(model) tree
# --------------------------------------------------------------------------------------------------


def _add_indent(text: str, spaces: int) -> str:
    """Indent every line of ``text`` but the first (torch's ``_addindent``)."""
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


def _is_module_container(value: Any) -> bool:
    """A list/tuple/dict (or nnx.List/nnx.Dict) holding at least one module."""
    if isinstance(value, (nnx.List, list, tuple)):
        return any(isinstance(item, nnx.Module) for item in value)
    if isinstance(value, (nnx.Dict, dict)):
        return any(isinstance(item, nnx.Module) for item in value.values())
    return False


def _named_children(module: nnx.Module) -> list[tuple[str, Any]]:
    """Direct sub-modules (and module containers) in definition order, as torch lists them."""
    if isinstance(module, Sequential):
        return [(str(index), layer) for index, layer in enumerate(module.layers)]
    children = []
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(value, nnx.Module) or _is_module_container(value):
            children.append((name, value))
    return children


def _container_repr(value: Any) -> str:
    """torch's ModuleList / ModuleDict rendering of a container attribute."""
    if isinstance(value, (nnx.Dict, dict)):
        items, title = list(value.items()), "ModuleDict"
    else:
        items, title = [(str(index), item) for index, item in enumerate(value)], "ModuleList"
    lines = [f"({key}): {_add_indent(_child_repr(item), 2)}" for key, item in items]
    return title + "(\n  " + "\n  ".join(lines) + "\n)"


def _child_repr(value: Any) -> str:
    if _is_module_container(value):  # before Module: nnx.List / nnx.Dict are modules themselves
        return _container_repr(value)
    if isinstance(value, nnx.Module):
        return module_repr(value)
    return repr(value)


def _plain_extra_repr(module: nnx.Module) -> str:
    """For a non-fnml leaf module: its simple static settings (ints, floats, bools, strings, tuples)."""
    simple = (int, float, bool, str, tuple)
    parts = [
        f"{name}={value!r}"
        for name, value in vars(module).items()
        if not name.startswith("_") and isinstance(value, simple)
    ]
    return ", ".join(parts)


def module_repr(module: nnx.Module) -> str:
    """Render any nnx.Module tree the way ``print(torch_model)`` does.

    PyTorch equivalent: ``torch.nn.Module.__repr__``.

    fnml layers print their torch ``extra_repr`` (``Linear(in_features=2, out_features=1, bias=True)``);
    sub-modules are listed as ``(name): child`` in definition order, ``Sequential`` children as ``(0)``,
    ``(1)``...; lists/dicts of modules as ``ModuleList``/``ModuleDict``. Plain (non-fnml) nnx leaf modules
    show their simple static attributes. Subclass :class:`Module` to get this as ``print(model)``.

    Example::

        class Net(nnx.Module):                 # a plain nnx module
            def __init__(self, *, rngs):
                self.fc = layers.Linear(2, 1, rngs=rngs)
        print(layers.module_repr(Net(rngs=nnx.Rngs(0))))
        # Net(
        #   (fc): Linear(in_features=2, out_features=1, bias=True)
        # )
    """
    # fnml layers (and the recurrent ones, which are not Module subclasses) define torch's extra_repr.
    has_extra_repr = callable(getattr(module, "extra_repr", None))
    extra = module.extra_repr() if has_extra_repr else ""
    children = _named_children(module)
    if not has_extra_repr and not children:
        extra = _plain_extra_repr(module)
    extra_lines = extra.split("\n") if extra else []
    child_lines = [f"({name}): {_add_indent(_child_repr(child), 2)}" for name, child in children]
    lines = extra_lines + child_lines
    text = type(module).__name__ + "("
    if lines:
        if len(extra_lines) == 1 and not child_lines:
            text += extra_lines[0]
        else:
            text += "\n  " + "\n  ".join(lines) + "\n"
    return text + ")"


class Module(nnx.Module):
    """Base class of fnml layers: an ``nnx.Module`` that prints like ``torch.nn.Module``.

    PyTorch equivalent: ``torch.nn.Module``.

    Subclass it for your own models to get torch's ``print(model)`` tree (plain ``nnx.Module`` subclasses
    keep flax's detailed repr; :func:`module_repr` renders those too). Override :meth:`extra_repr` to add
    settings to the one-line form, as in torch. ``train()`` / ``eval()`` are flax's (see module docstring).

    Example::

        class SimpleNN(layers.Module):
            def __init__(self, *, rngs):
                self.fc1 = layers.Linear(2, 2, rngs=rngs)
                self.fc2 = layers.Linear(2, 1, rngs=rngs)
            def __call__(self, x):
                return self.fc2(jax.nn.relu(self.fc1(x)))
    """

    def extra_repr(self) -> str:
        """Settings shown inside the parentheses (torch's ``extra_repr``)."""
        return ""

    def __repr__(self) -> str:
        return module_repr(self)

    # nnx defines __str__ separately (print() uses it): keep both torch-like.
    __str__ = __repr__


# --------------------------------------------------------------------------------------------------
# Small helpers: argument checks, dtypes, initialisation
# --------------------------------------------------------------------------------------------------


def _pair(name: str, value: Any, *, where: str, minimum: int = 1) -> tuple[int, int]:
    """An int or a 2-tuple of ints, each >= ``minimum``, as a 2-tuple."""
    items = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(items, (tuple, list))
        or len(items) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in items)
    ):
        raise ValueError(f"{where}: {name} must be an int or a tuple of 2 ints, got {name}={value!r}")
    if any(v < minimum for v in items):
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{where}: {name} must be {bound}, got {name}={value!r}")
    return int(items[0]), int(items[1])


def _compute_dtype(dtype: Any, *arrays: Any) -> Any:
    """``dtype`` when given, else the promoted dtype of the input and the parameters (flax convention)."""
    return jnp.dtype(dtype) if dtype is not None else jnp.result_type(*arrays)


def _int_dtype() -> Any:
    # torch's num_batches_tracked is int64; without jax x64 the widest available int is int32.
    return jax.dtypes.canonicalize_dtype(jnp.int64)


def torch_uniform(bound: float) -> nnx.Initializer:
    """Initializer drawing from the symmetric U(-bound, bound), torch's Linear/Conv/RNN init.

    PyTorch equivalent: ``torch.nn.init.uniform_(w, -bound, bound)`` (and ``kaiming_uniform_(a=sqrt(5))``,
    whose bound is also ``1/sqrt(fan_in)``).

    ``nnx.initializers.uniform(s)`` draws from U[0, s), hence this helper. The random stream differs
    from torch's (JAX keys), the distribution and bound are the same.

    Example::

        init = torch_uniform(1 / math.sqrt(fan_in))
        w = init(jax.random.key(0), (fan_in, 8), jnp.float32)
    """
    bound = float(bound)

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        # Drawn flat then reshaped: on XLA CPU the eager N-D draw compiles ~4x slower (~1 s per conv kernel).
        flat = jax.random.uniform(key, (math.prod(shape),), dtype, minval=-bound, maxval=bound)
        return flat.reshape(tuple(shape))  # (prod(shape),) -> shape

    return init


def _fan_in_bound(fan_in: int) -> float:
    # torch: bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0 (weight via kaiming_uniform_(a=sqrt(5))).
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0


def _is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


# --------------------------------------------------------------------------------------------------
# Linear, Conv2d
# --------------------------------------------------------------------------------------------------


class Linear(Module, nnx.Linear):
    """Fully connected layer ``y = x @ kernel + bias`` with torch's signature and initialisation.

    PyTorch equivalent: ``torch.nn.Linear(in_features, out_features, bias=True)``.

    Shapes: ``x: (*, in_features) -> (*, out_features)``. ``kernel`` is ``(in_features, out_features)`` =
    torch ``weight.T``; ``bias`` is ``(out_features,)`` or None. Built on ``nnx.Linear`` (same math);
    only the initialisation differs from flax's: weight AND bias ~ U(-1/sqrt(in_features),
    1/sqrt(in_features)) as in torch (flax: truncated lecun-normal kernel, zero bias). ``param_dtype``
    is the parameter dtype (float64 for exactness checks); ``dtype`` the computation dtype (None:
    promote input and parameters).

    Example::

        fc = Linear(2, 1, rngs=nnx.Rngs(0))
        y = fc(jnp.ones((4, 2)))              # (4, 1)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        where = "Linear"
        check_positive_int("in_features", in_features, where=where)
        check_positive_int("out_features", out_features, where=where)
        if not isinstance(bias, bool):
            raise TypeError(f"{where}: bias must be a bool, got bias={bias!r}")
        init = torch_uniform(_fan_in_bound(in_features))
        super().__init__(
            in_features,
            out_features,
            use_bias=bias,
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=init,
            bias_init=init,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim < 1:
            raise ValueError("Linear: input must be at least 1-D (*, in_features), got a 0-D array")
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear(in_features={self.in_features}) got an input with {x.shape[-1]} features "
                f"(last axis of shape {x.shape}); expected {self.in_features}"
            )
        return super().__call__(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.use_bias}"


_PADDING_MODES = {"zeros": None, "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


# Conv2d lowers to im2col + one matmul when a patch holds at least this many values (in_channels*kh*kw).
_IM2COL_MIN_DEPTH = 64


def _conv2d_im2col(x, kernel, stride, padding, dilation):
    """NHWC convolution (groups=1) as shifted strided views stacked into patches + one contraction."""
    (pt, pb), (pl, pr) = padding
    if pt or pb or pl or pr:
        x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kh, kw, cin, cout = kernel.shape
    (sh, sw), (dh, dw) = stride, dilation
    n, h, w, _ = x.shape
    ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    views = [
        # (N, H, W, C) -> (N, Ho, Wo, C): the input pixels under kernel tap (i, j) for every output pixel.
        lax.slice(
            x, (0, i * dh, j * dw, 0), (n, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, cin), (1, sh, sw, 1)
        )
        for i in range(kh)
        for j in range(kw)
    ]
    # k views of (N, Ho, Wo, C) -> (N, Ho, Wo, k, C) -> (N*Ho*Wo, k*C), taps in HWIO's (i, j, c) order.
    patches = jnp.stack(views, axis=3).reshape(n * ho * wo, kh * kw * cin)
    # (kh, kw, C, O) -> (kh*kw*C, O): one plain 2-D matmul (measured faster on XLA CPU than an einsum over
    # separate tap and channel axes, and than a dot_general on the 4-D patches: its weight gradient then
    # contracts one (N*Ho*Wo) axis instead of three).
    y = jnp.matmul(patches, kernel.reshape(kh * kw * cin, cout))
    return y.reshape(n, ho, wo, cout)  # (N*Ho*Wo, O) -> (N, Ho, Wo, O)


class Conv2d(Module):
    """2-D convolution over channels-last images, with torch's signature, padding rules and init.

    PyTorch equivalent: ``torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
    dilation=1, groups=1, bias=True, padding_mode="zeros")``.

    Shapes: ``x: (N, H, W, in_channels)`` (or unbatched ``(H, W, in_channels)``) ->
    ``(N, H_out, W_out, out_channels)`` with ``H_out = (H + 2*pad - dilation*(k-1) - 1) // stride + 1``.
    Images are NHWC, not torch's NCHW: convert with ``fnml.tensors.nchw_to_nhwc``. ``kernel`` is HWIO
    ``(kh, kw, in_channels // groups, out_channels)`` = torch OIHW weight transposed ``(2, 3, 1, 0)``;
    ``bias`` is ``(out_channels,)`` or None.

    ``padding``: int, ``(ph, pw)``, ``"valid"`` (no padding) or ``"same"`` (stride 1 only, as torch;
    odd total padding puts the extra row/column at the bottom/right, as torch). ``padding_mode``:
    ``"zeros"``, ``"reflect"``, ``"replicate"``, ``"circular"``. Init: weight AND bias ~
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), ``fan_in = in_channels / groups * kh * kw`` as torch.

    Written on ``lax.conv_general_dilated`` rather than ``nnx.Conv``: nnx.Conv defaults to "SAME" padding
    (torch: 0), has no reflect/replicate modes and names its settings differently.

    Lowering rule (same numbers either way, decided at trace time): on the CPU backend, with
    ``groups == 1`` and a patch depth ``in_channels * kh * kw >= 64``, the convolution runs as im2col:
    the ``kh * kw`` shifted strided views of the (padded) input are stacked into patches
    ``(N*H_out*W_out, kh*kw*in_channels)`` and multiplied by the kernel reshaped to
    ``(kh*kw*in_channels, out_channels)`` in ONE 2-D matmul; otherwise ``lax.conv_general_dilated``.
    Measured on the 2-core CPU machine (issue 7's W3 CNN training step, same process, interleaved):
    13.4 -> 12.3 ms per step (conv2, 32 -> 64 channels, takes the im2col path), and 5-7% less again with
    the 2-D matmul instead of a ``dot_general`` on 4-D patches; shallow patches such as W3's conv1
    (1 channel, depth 9) are not faster through im2col (nor through a tap-by-tap sum) and keep ``lax``.

    Example::

        conv = Conv2d(3, 8, 3, padding=1, rngs=nnx.Rngs(0))
        y = conv(jnp.ones((2, 32, 32, 3)))       # (2, 32, 32, 8)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        where = "Conv2d"
        check_positive_int("in_channels", in_channels, where=where)
        check_positive_int("out_channels", out_channels, where=where)
        check_positive_int("groups", groups, where=where)
        if in_channels % groups:
            raise ValueError(f"{where}: in_channels={in_channels} must be divisible by groups={groups}")
        if out_channels % groups:
            raise ValueError(f"{where}: out_channels={out_channels} must be divisible by groups={groups}")
        self.kernel_size = _pair("kernel_size", kernel_size, where=where)
        self.stride = _pair("stride", stride, where=where)
        self.dilation = _pair("dilation", dilation, where=where)
        if isinstance(padding, str):
            check_choice("padding", padding, ("valid", "same"), where=where)
            if padding == "same" and self.stride != (1, 1):
                raise ValueError(
                    f"{where}: padding='same' is not supported for strided convolutions "
                    f"(stride={self.stride}), as in torch; give explicit padding instead"
                )
            self.padding = padding
        else:
            self.padding = _pair("padding", padding, where=where, minimum=0)
        check_choice("padding_mode", padding_mode, tuple(_PADDING_MODES), where=where)
        if not isinstance(bias, bool):
            raise TypeError(f"{where}: bias must be a bool, got bias={bias!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.padding_mode = padding_mode
        self.dtype = dtype
        self.param_dtype = param_dtype

        kh, kw = self.kernel_size
        init = torch_uniform(_fan_in_bound(in_channels // groups * kh * kw))
        # HWIO = torch OIHW transposed (2, 3, 1, 0).
        self.kernel = nnx.Param(init(rngs.params(), (kh, kw, in_channels // groups, out_channels), param_dtype))
        self.bias = nnx.Param(init(rngs.params(), (out_channels,), param_dtype)) if bias else nnx.data(None)

    def _padding_pairs(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Explicit ((top, bottom), (left, right)) padding, torch's rule for "same"."""
        if self.padding == "valid":
            return (0, 0), (0, 0)
        if self.padding == "same":
            pairs = []
            for k, d in zip(self.kernel_size, self.dilation):
                total = d * (k - 1)
                pairs.append((total // 2, total - total // 2))
            return pairs[0], pairs[1]
        ph, pw = self.padding
        return (ph, ph), (pw, pw)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        check_ndim("input", x.shape, (3, 4), where="Conv2d (NHWC or unbatched HWC)")
        unbatched = x.ndim == 3
        if unbatched:
            x = x[None]  # (H, W, C) -> (1, H, W, C)
        if x.shape[-1] != self.in_channels:
            hint = ""
            if x.shape[1] == self.in_channels:
                hint = "; the input looks NCHW: convert it with fnml.tensors.nchw_to_nhwc"
            raise ValueError(
                f"Conv2d(in_channels={self.in_channels}) got an input with {x.shape[-1]} channels "
                f"(last axis of NHWC shape {x.shape}); expected {self.in_channels}{hint}"
            )
        pad_h, pad_w = self._padding_pairs()
        for axis, (before, after), k, d in zip((1, 2), (pad_h, pad_w), self.kernel_size, self.dilation):
            padded = x.shape[axis] + before + after
            if padded < d * (k - 1) + 1:
                raise ValueError(
                    f"Conv2d: padded input size {padded} (axis {axis} of shape {x.shape}) is smaller than "
                    f"the effective kernel size {d * (k - 1) + 1} (kernel_size={self.kernel_size}, "
                    f"dilation={self.dilation})"
                )
        dtype = _compute_dtype(self.dtype, x, self.kernel[...])
        x = x.astype(dtype)
        kernel = self.kernel[...].astype(dtype)
        mode = _PADDING_MODES[self.padding_mode]
        if mode is not None:
            for axis, (before, after) in zip((1, 2), (pad_h, pad_w)):
                size = x.shape[axis]
                limit = size - 1 if mode == "reflect" else size
                if mode != "edge" and max(before, after) > limit:
                    raise ValueError(
                        f"Conv2d: padding_mode={self.padding_mode!r} needs padding <= {limit} for an input "
                        f"of size {size} on axis {axis}, got padding ({before}, {after})"
                    )
            # Pad first with the requested mode, then convolve without padding (as torch does).
            x = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)), mode=mode)
            pad_h, pad_w = (0, 0), (0, 0)
        if self._use_im2col():
            y = _conv2d_im2col(x, kernel, self.stride, (pad_h, pad_w), self.dilation)
        else:
            y = lax.conv_general_dilated(
                x,
                kernel,
                window_strides=self.stride,
                padding=(pad_h, pad_w),
                rhs_dilation=self.dilation,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=self.groups,
            )
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y[0] if unbatched else y

    def _use_im2col(self) -> bool:
        """The lowering rule (see the class docstring); decided at trace time, never per step."""
        kh, kw = self.kernel_size
        return self.groups == 1 and self.in_channels * kh * kw >= _IM2COL_MIN_DEPTH and jax.default_backend() == "cpu"

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------


class _BatchNorm(Module):
    """Shared BatchNorm: channels-last, torch's momentum and unbiased running variance."""

    _name = "BatchNorm"
    _ranks: tuple[int, ...] = ()
    _layout = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        where = self._name
        check_positive_int("num_features", num_features, where=where)
        check_number("eps", eps, where=where)
        if not eps > 0:
            raise ValueError(f"{where}: eps must be > 0, got eps={eps!r}")
        if momentum is not None:
            check_in_interval("momentum", momentum, 0.0, 1.0, closed_high=True, where=where)
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.dtype = dtype
        self.param_dtype = param_dtype
        # flax's train()/eval() toggle this attribute: False == torch's training mode (the default).
        self.use_running_average = False
        shape = (num_features,)
        self.weight = nnx.Param(jnp.ones(shape, param_dtype)) if affine else nnx.data(None)
        self.bias = nnx.Param(jnp.zeros(shape, param_dtype)) if affine and bias else nnx.data(None)
        if track_running_stats:
            # Kept in the parameter dtype (nnx.BatchNorm keeps float32 even for float64 parameters).
            self.running_mean = nnx.BatchStat(jnp.zeros(shape, param_dtype))
            self.running_var = nnx.BatchStat(jnp.ones(shape, param_dtype))
            self.num_batches_tracked = nnx.BatchStat(jnp.zeros((), _int_dtype()))
        else:
            self.running_mean = nnx.data(None)
            self.running_var = nnx.data(None)
            self.num_batches_tracked = nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        check_ndim("input", x.shape, self._ranks, where=f"{self._name} ({self._layout})")
        if x.shape[-1] != self.num_features:
            raise ValueError(
                f"{self._name}(num_features={self.num_features}) got an input with {x.shape[-1]} channels "
                f"(last axis of channels-last shape {x.shape}); expected {self.num_features}"
            )
        training = not self.use_running_average
        use_batch_stats = training or not self.track_running_stats
        axes = tuple(range(x.ndim - 1))
        count = math.prod(x.shape[:-1])
        dtype = _compute_dtype(self.dtype, x, *(v[...] for v in (self.weight,) if v is not None))
        x = x.astype(dtype)
        if use_batch_stats:
            if training and count <= 1:
                raise ValueError(
                    f"{self._name}: expected more than 1 value per channel when training, got input shape {x.shape}"
                )
            mean = jnp.mean(x, axis=axes)
            # Two-pass variance; torch normalises with the biased one and tracks the unbiased one.
            centred_sum_sq = jnp.sum(jnp.square(x - mean), axis=axes)
            var = centred_sum_sq / count
            if training and self.track_running_stats:
                tracked = self.num_batches_tracked[...] + 1
                self.num_batches_tracked[...] = tracked
                if self.momentum is None:  # cumulative moving average, as torch
                    factor = 1.0 / tracked.astype(self.running_mean[...].dtype)
                else:
                    factor = self.momentum
                stat_dtype = self.running_mean[...].dtype
                unbiased = lax.stop_gradient(centred_sum_sq / (count - 1)).astype(stat_dtype)
                batch_mean = lax.stop_gradient(mean).astype(stat_dtype)
                self.running_mean[...] = factor * batch_mean + (1 - factor) * self.running_mean[...]
                self.running_var[...] = factor * unbiased + (1 - factor) * self.running_var[...]
        else:
            mean = self.running_mean[...].astype(dtype)
            var = self.running_var[...].astype(dtype)
        y = (x - mean) * lax.rsqrt(var + jnp.asarray(self.eps, dtype))
        if self.weight is not None:
            y = y * self.weight[...].astype(dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over ``(N, C)`` or channels-last ``(N, L, C)`` inputs, torch's numbers.

    PyTorch equivalent: ``torch.nn.BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True, *, bias=True)`` (torch takes ``(N, C)`` or ``(N, C, L)``: here the channel
    axis is LAST).

    Training mode (the default, ``model.train()``): normalise with the batch mean and biased variance;
    update ``running_mean = (1 - momentum) * running_mean + momentum * mean`` and ``running_var`` with the
    UNBIASED batch variance (n / (n - 1)), increment ``num_batches_tracked``; ``momentum=None`` uses the
    cumulative average (factor 1 / num_batches_tracked). Eval mode (``model.eval()``): normalise with the
    running statistics (with ``track_running_stats=False``: always the batch statistics, as torch).
    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` (``affine=False``: no weight and bias;
    ``bias=False``: no bias).

    Differences from ``nnx.BatchNorm`` it removes: flax's momentum is torch's ``1 - momentum`` (and
    defaults to 0.99), flax tracks the biased variance and keeps running stats in float32; here they are
    in the parameter dtype. Attributes: ``weight``, ``bias`` (Param or None), ``running_mean``,
    ``running_var`` (BatchStat ``(C,)``), ``num_batches_tracked`` (int BatchStat scalar).

    Example::

        bn = BatchNorm1d(4)
        y = bn(jnp.ones((8, 4)))     # training mode: updates the running statistics
        bn.eval(); y = bn(x)         # uses them
    """

    _name = "BatchNorm1d"
    _ranks = (2, 3)
    _layout = "(N, C) or channels-last (N, L, C)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over channels-last images ``(N, H, W, C)``, torch's numbers.

    PyTorch equivalent: ``torch.nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True,
    track_running_stats=True)`` (torch takes NCHW; convert with ``fnml.tensors.nchw_to_nhwc``).

    Same rules as :class:`BatchNorm1d`: statistics over (N, H, W) per channel, unbiased running variance,
    torch's momentum convention, ``num_batches_tracked``, running stats in the parameter dtype.

    Example::

        bn = BatchNorm2d(16)
        y = bn(jnp.ones((8, 28, 28, 16)))
    """

    _name = "BatchNorm2d"
    _ranks = (4,)
    _layout = "channels-last (N, H, W, C)"


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` axes, torch's eps and exact variance.

    PyTorch equivalent: ``torch.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True,
    bias=True)``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with mean and biased variance over the last
    ``len(normalized_shape)`` axes; the variance is two-pass ``mean((x - mean)**2)`` (flax's default fast
    variance ``E[x^2] - E[x]^2`` loses precision for large-mean inputs) and ``eps`` is 1e-5 (flax: 1e-6).
    ``weight`` (ones) and ``bias`` (zeros) have shape ``normalized_shape`` (or are None).

    Example::

        ln = LayerNorm(16)
        y = ln(jnp.ones((4, 10, 16)))
    """

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        where = "LayerNorm"
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
            raise ValueError(
                f"{where}: normalized_shape must be a positive int or a non-empty tuple of positive ints, "
                f"got normalized_shape={normalized_shape!r}"
            )
        check_number("eps", eps, where=where)
        if not eps > 0:
            raise ValueError(f"{where}: eps must be > 0, got eps={eps!r}")
        self.normalized_shape = shape
        self.eps = eps
        self.elementwise_affine = bool(elementwise_affine)
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.weight = nnx.Param(jnp.ones(shape, param_dtype)) if elementwise_affine else nnx.data(None)
        use_bias = elementwise_affine and bias
        self.bias = nnx.Param(jnp.zeros(shape, param_dtype)) if use_bias else nnx.data(None)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        k = len(self.normalized_shape)
        if x.ndim < k or tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(
                f"LayerNorm(normalized_shape={self.normalized_shape}) got an input of shape {x.shape}; its "
                f"trailing axes must be {self.normalized_shape}"
            )
        axes = tuple(range(x.ndim - k, x.ndim))
        params = [p[...] for p in (self.weight, self.bias) if p is not None]
        dtype = _compute_dtype(self.dtype, x, *params)
        x = x.astype(dtype)
        mean = jnp.mean(x, axis=axes, keepdims=True)
        centred = x - mean
        var = jnp.mean(jnp.square(centred), axis=axes, keepdims=True)
        y = centred * lax.rsqrt(var + jnp.asarray(self.eps, dtype))
        if self.weight is not None:
            y = y * self.weight[...].astype(dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )


# --------------------------------------------------------------------------------------------------
# Dropout, Embedding
# --------------------------------------------------------------------------------------------------


class Dropout(Module):
    """Zero each element with probability ``p`` in training mode and scale the rest by ``1 / (1 - p)``.

    PyTorch equivalent: ``torch.nn.Dropout(p=0.5)``.

    Training mode (the default, ``model.train()``): ``y = x * (mask / (1 - p))`` with ``mask ~
    Bernoulli(1 - p)`` drawn from the ``'dropout'`` stream of the ``nnx.Rngs`` given at construction (or
    ``rngs=`` at call time): same seed, same masks. Eval mode (``model.eval()``): identity. ``p=1`` gives
    zeros. Masks cannot match torch's (different random generators); everything else does.

    Example::

        drop = Dropout(0.2, rngs=nnx.Rngs(dropout=0))
        y = drop(jnp.ones((4, 8)))
        drop.eval(); assert (drop(x) == x).all()
    """

    def __init__(self, p: float = 0.5, *, rngs: nnx.Rngs | None = None):
        check_in_interval("p", p, 0.0, 1.0, closed_high=True, where="Dropout")
        self.p = float(p)
        # flax's train()/eval() toggle this attribute: False == torch's training mode (the default).
        self.deterministic = False
        if rngs is None:
            self.rngs = nnx.data(None)
        elif isinstance(rngs, nnx.Rngs):
            self.rngs = rngs["dropout"].fork()
        else:
            raise TypeError(f"Dropout: rngs must be an nnx.Rngs or None, got {type(rngs).__name__}")

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        x = jnp.asarray(x)
        if self.deterministic or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * jnp.zeros_like(x)  # torch: input * 0 (keeps NaN/inf propagation)
        if rngs is not None:
            key = rngs["dropout"]()
        elif self.rngs is not None:
            key = self.rngs()
        else:
            raise ValueError(
                "Dropout in training mode needs random numbers: build it with rngs=nnx.Rngs(dropout=seed), "
                "pass rngs= to the call, or switch the model to eval mode with model.eval()"
            )
        keep = jax.random.bernoulli(key, 1.0 - self.p, x.shape)
        # torch multiplies by mask / (1 - p) (not x / (1 - p)): same rounding.
        scale = jnp.asarray(1.0 / (1.0 - self.p), x.dtype)
        return x * (keep.astype(x.dtype) * scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Embedding(Module):
    """Lookup table ``weight[indices]`` with torch's N(0, 1) init and ``padding_idx`` semantics.

    PyTorch equivalent: ``torch.nn.Embedding(num_embeddings, embedding_dim, padding_idx=None)``.

    Shapes: integer ``indices: (*)`` -> ``(*, embedding_dim)``. ``weight`` is ``(num_embeddings,
    embedding_dim)`` ~ N(0, 1) (flax's ``nnx.Embed``: std 1/sqrt(features)). With ``padding_idx``, that
    row is initialised to zeros and receives NO gradient (flax has no such option). Out-of-range indices
    raise eagerly (outside jit); inside jit JAX clamps them instead of raising.

    Example::

        emb = Embedding(10, 3, padding_idx=0, rngs=nnx.Rngs(0))
        y = emb(jnp.array([[0, 2], [4, 9]]))    # (2, 2, 3)
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        where = "Embedding"
        check_positive_int("num_embeddings", num_embeddings, where=where)
        check_positive_int("embedding_dim", embedding_dim, where=where)
        if padding_idx is not None:
            if not isinstance(padding_idx, int) or isinstance(padding_idx, bool):
                raise TypeError(f"{where}: padding_idx must be an int or None, got padding_idx={padding_idx!r}")
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"{where}: padding_idx must be within num_embeddings={num_embeddings} "
                    f"(in [-{num_embeddings}, {num_embeddings - 1}]), got padding_idx={padding_idx}"
                )
            padding_idx = padding_idx % num_embeddings  # torch stores the non-negative index
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        # Drawn flat then reshaped (faster to compile on CPU, as in torch_uniform).
        weight = jax.random.normal(rngs.params(), (num_embeddings * embedding_dim,), param_dtype)
        weight = weight.reshape(num_embeddings, embedding_dim)  # (E * D,) -> (E, D)
        if padding_idx is not None:
            weight = weight.at[padding_idx].set(0)
        self.weight = nnx.Param(weight)

    def __call__(self, indices: jax.Array) -> jax.Array:
        indices = jnp.asarray(indices)
        if not jnp.issubdtype(indices.dtype, jnp.integer):
            raise TypeError(f"Embedding: indices must be an integer array, got dtype {indices.dtype}")
        if not _is_traced(indices) and indices.size:
            low, high = int(indices.min()), int(indices.max())
            if low < 0 or high >= self.num_embeddings:
                bad = low if low < 0 else high
                raise IndexError(
                    f"Embedding(num_embeddings={self.num_embeddings}): index {bad} is out of range "
                    f"[0, {self.num_embeddings - 1}]"
                )
        rows = jnp.take(self.weight[...], indices, axis=0)  # (*) -> (*, embedding_dim)
        if self.padding_idx is not None:
            # The padding row contributes to the output but gets no gradient, as in torch.
            is_padding = (indices == self.padding_idx)[..., None]
            rows = jnp.where(is_padding, lax.stop_gradient(rows), rows)
        return rows

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text


# --------------------------------------------------------------------------------------------------
# Pooling (NHWC)
# --------------------------------------------------------------------------------------------------


def _pool_output_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape: floor/ceil division, last window must start inside the input."""
    numerator = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    out = numerator // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _windows(
    x: jax.Array,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    padding: tuple[int, int],
    out_size: tuple[int, int],
    fill: float,
) -> jax.Array:
    """All pooling windows on a trailing axis: (N, H, W, C) -> (N, Ho, Wo, C, kh*kw), row-major order."""
    (kh, kw), (sh, sw), (dh, dw), (ph, pw), (oh, ow) = kernel, stride, dilation, padding, out_size
    # Extra bottom/right padding so that the last (ceil-mode) window fits.
    need_h = (oh - 1) * sh + dh * (kh - 1) + 1
    need_w = (ow - 1) * sw + dw * (kw - 1) + 1
    extra_h = max(need_h - x.shape[1] - ph, 0)
    extra_w = max(need_w - x.shape[2] - pw, 0)
    x = jnp.pad(x, ((0, 0), (ph, extra_h), (pw, extra_w), (0, 0)), constant_values=fill)
    slices = [
        x[:, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.stack(slices, axis=-1)  # kh*kw x (N, Ho, Wo, C) -> (N, Ho, Wo, C, kh*kw)


def _max_first(windows: jax.Array) -> jax.Array:
    """Max over the last axis whose gradient goes to ONE element per window: the first maximum, as torch.

    ``jnp.max``'s gradient splits among tied elements; torch's goes to the first maximum in row-major
    window order. The value is read through a one-hot of the argmax, so the backward pass is an
    elementwise select: far cheaper on XLA CPU than reduce_window's select-and-scatter, and no
    custom_vjp (every autodiff mode works). NaN propagates to the output as in torch; with several
    NaNs in one window the gradient goes to the first NaN (torch: the last), which only matters when
    the loss is already NaN.
    """
    first = jnp.argmax(lax.stop_gradient(windows), axis=-1)  # first maximum (first NaN if any)
    one_hot = first[..., None] == jnp.arange(windows.shape[-1])  # (..., K)
    return jnp.sum(jnp.where(one_hot, windows, jnp.zeros((), windows.dtype)), axis=-1)


class _Pool2d(Module):
    """Shared checks for MaxPool2d / AvgPool2d (NHWC, torch's argument rules)."""

    _name = "Pool2d"

    def _setup(self, kernel_size, stride, padding, dilation, ceil_mode) -> None:
        where = self._name
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self._kernel = _pair("kernel_size", kernel_size, where=where)
        self._stride = _pair("stride", self.stride, where=where)
        self._padding = _pair("padding", padding, where=where, minimum=0)
        self._dilation = _pair("dilation", dilation, where=where)
        for p, k, d in zip(self._padding, self._kernel, self._dilation):
            if p > (d * (k - 1) + 1) // 2:
                raise ValueError(
                    f"{where}: padding should be at most half of the effective kernel size, got "
                    f"padding={padding}, kernel_size={kernel_size}, dilation={dilation}"
                )

    def _prepare(self, x: jax.Array) -> tuple[jax.Array, bool, tuple[int, int]]:
        """(H, W, C) / (N, H, W, C) -> (N, H, W, C), whether it was unbatched, the output size."""
        x = jnp.asarray(x)
        check_ndim("input", x.shape, (3, 4), where=f"{self._name} (NHWC or unbatched HWC)")
        unbatched = x.ndim == 3
        if unbatched:
            x = x[None]  # (H, W, C) -> (1, H, W, C)
        out = tuple(
            _pool_output_size(x.shape[axis], k, s, p, d, self.ceil_mode)
            for axis, k, s, p, d in zip((1, 2), self._kernel, self._stride, self._padding, self._dilation)
        )
        if min(out) < 1:
            raise ValueError(
                f"{self._name}: input of shape {x.shape} (NHWC) is too small for kernel_size="
                f"{self.kernel_size}, stride={self.stride}, padding={self.padding}: output size {out}"
            )
        return x, unbatched, out

    def _is_tiling(self, x: jax.Array, out: tuple[int, int]) -> bool:
        """Non-overlapping windows that tile the (cropped) input: the reshape fast path applies."""
        return (
            self._stride == self._kernel
            and self._padding == (0, 0)
            and self._dilation == (1, 1)
            and out[0] * self._kernel[0] <= x.shape[1]
            and out[1] * self._kernel[1] <= x.shape[2]
        )


class MaxPool2d(_Pool2d):
    """Max pooling over channels-last images with torch's defaults and gradient.

    PyTorch equivalent: ``torch.nn.MaxPool2d(kernel_size, stride=None, padding=0, dilation=1,
    ceil_mode=False)``.

    Shapes: ``(N, H, W, C)`` or ``(H, W, C)`` -> ``(N, H_out, W_out, C)``, ``H_out`` by torch's formula
    (``ceil_mode`` rounds up, the last window must start inside the input or its left padding).
    ``stride`` defaults to ``kernel_size`` (``nnx.max_pool``: 1). Padding is -inf, at most half the
    effective kernel. The gradient goes entirely to the FIRST maximal element of each window (row-major),
    as torch's (``jnp.max`` splits it among ties); NaN propagates as in torch.

    Performance: windows that tile the input (stride == kernel, no padding/dilation) are a reshape, the
    general case stacks the kh*kw strided views; the max is read through a one-hot of the argmax, so the
    backward pass is an elementwise select. On a (64, 26, 26, 32) input with
    a 2x2 window the gradient is many times cheaper on XLA CPU than ``nnx.max_pool``'s (reduce_window's
    select-and-scatter), which dominates a small CNN step. ``return_indices`` is not supported.

    Example::

        pool = MaxPool2d(2)
        y = pool(jnp.ones((8, 28, 28, 16)))      # (8, 14, 14, 16)
    """

    _name = "MaxPool2d"

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        ceil_mode: bool = False,
    ):
        self.dilation = dilation
        self._setup(kernel_size, stride, padding, dilation, ceil_mode)

    def __call__(self, x: jax.Array) -> jax.Array:
        x, unbatched, (oh, ow) = self._prepare(x)
        if self._is_tiling(x, (oh, ow)):
            kh, kw = self._kernel
            n, c = x.shape[0], x.shape[3]
            x = x[:, : oh * kh, : ow * kw, :]  # floor mode drops the incomplete last windows
            x = x.reshape(n, oh, kh, ow, kw, c)  # (N, Ho*kh, Wo*kw, C) -> (N, Ho, kh, Wo, kw, C)
            x = x.transpose(0, 1, 3, 5, 2, 4)  # -> (N, Ho, Wo, C, kh, kw)
            windows = x.reshape(n, oh, ow, c, kh * kw)  # -> (N, Ho, Wo, C, kh*kw), row-major window order
        else:
            fill = -jnp.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
            windows = _windows(x, self._kernel, self._stride, self._dilation, self._padding, (oh, ow), fill)
        y = _max_first(windows)
        return y[0] if unbatched else y

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class AvgPool2d(_Pool2d):
    """Average pooling over channels-last images with torch's divisor rules.

    PyTorch equivalent: ``torch.nn.AvgPool2d(kernel_size, stride=None, padding=0, ceil_mode=False,
    count_include_pad=True, divisor_override=None)``.

    Shapes as :class:`MaxPool2d`. Each window's sum (zero padding) is divided by: ``divisor_override``
    if given; else with ``count_include_pad`` the window size clipped to the padded input (a ceil-mode
    window hanging past the padding does not count the overhang, as torch); else the number of real
    input elements in the window. ``stride`` defaults to ``kernel_size``.

    Example::

        pool = AvgPool2d(2)
        y = pool(jnp.ones((8, 28, 28, 16)))      # (8, 14, 14, 16)
    """

    _name = "AvgPool2d"

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ):
        self._setup(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        if divisor_override is not None:
            check_positive_int("divisor_override", divisor_override, where=self._name)
        self.divisor_override = divisor_override

    def _divisors(self, height: int, width: int, out: tuple[int, int]) -> np.ndarray:
        """Per-output-position divisor (Ho, Wo), torch's avg_pool2d rule, as a host constant."""
        per_axis = []
        for size, k, s, p, o in zip((height, width), self._kernel, self._stride, self._padding, out):
            start = np.arange(o) * s - p
            end = np.minimum(start + k, size + p)
            padded_count = end - start
            real_count = np.minimum(end, size) - np.maximum(start, 0)
            per_axis.append(padded_count if self.count_include_pad else real_count)
        return np.outer(per_axis[0], per_axis[1])

    def __call__(self, x: jax.Array) -> jax.Array:
        x, unbatched, (oh, ow) = self._prepare(x)
        height, width = x.shape[1], x.shape[2]
        if self._is_tiling(x, (oh, ow)):
            kh, kw = self._kernel
            n, c = x.shape[0], x.shape[3]
            x = x[:, : oh * kh, : ow * kw, :]  # floor mode drops the incomplete last windows
            sums = x.reshape(n, oh, kh, ow, kw, c).sum(axis=(2, 4))  # (N, Ho, kh, Wo, kw, C) -> (N, Ho, Wo, C)
        else:
            windows = _windows(x, self._kernel, self._stride, (1, 1), self._padding, (oh, ow), 0)
            sums = windows.sum(axis=-1)  # (N, Ho, Wo, C, kh*kw) -> (N, Ho, Wo, C)
        if self.divisor_override is not None:
            divisor = np.full((oh, ow), self.divisor_override)
        else:
            divisor = self._divisors(height, width, (oh, ow))
        y = sums / jnp.asarray(divisor, sums.dtype)[:, :, None]  # (Ho, Wo) -> (Ho, Wo, 1)
        return y[0] if unbatched else y

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size over channels-last images, torch's window formula.

    PyTorch equivalent: ``torch.nn.AdaptiveAvgPool2d(output_size)``.

    Shapes: ``(N, H, W, C)`` or ``(H, W, C)`` -> ``(N, out_h, out_w, C)``; ``output_size`` is an int or a
    tuple whose ``None`` entries keep the input size. Output ``i`` averages input rows
    ``[floor(i * H / out_h), ceil((i + 1) * H / out_h))`` (windows may overlap), as torch.

    Example::

        gap = AdaptiveAvgPool2d((1, 1))
        y = gap(jnp.ones((8, 7, 7, 64)))         # (8, 1, 1, 64)
    """

    def __init__(self, output_size: int | tuple[int | None, int | None]):
        where = "AdaptiveAvgPool2d"
        items = (output_size, output_size) if not isinstance(output_size, (tuple, list)) else tuple(output_size)
        if len(items) != 2 or not all(
            v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1) for v in items
        ):
            raise ValueError(
                f"{where}: output_size must be a positive int or a tuple of 2 positive ints (or None), "
                f"got output_size={output_size!r}"
            )
        self.output_size = output_size
        self._output = items

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        check_ndim("input", x.shape, (3, 4), where="AdaptiveAvgPool2d (NHWC or unbatched HWC)")
        unbatched = x.ndim == 3
        if unbatched:
            x = x[None]  # (H, W, C) -> (1, H, W, C)
        height, width = x.shape[1], x.shape[2]
        oh = height if self._output[0] is None else self._output[0]
        ow = width if self._output[1] is None else self._output[1]
        if (oh, ow) == (1, 1):
            y = jnp.mean(x, axis=(1, 2), keepdims=True)  # global average pool
        else:
            # 0/1 membership matrices (out, in) from torch's start/end indices; sum then divide by count.
            rows, cols = _adaptive_membership(height, oh), _adaptive_membership(width, ow)
            sums = jnp.einsum(
                "ih,nhwc,jw->nijc",
                jnp.asarray(rows, x.dtype),
                x,
                jnp.asarray(cols, x.dtype),
                precision=lax.Precision.HIGHEST,
            )
            counts = np.outer(rows.sum(1), cols.sum(1))  # (Ho, Wo)
            y = sums / jnp.asarray(counts, x.dtype)[:, :, None]
        return y[0] if unbatched else y

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


def _adaptive_membership(size: int, out: int) -> np.ndarray:
    """(out, size) 0/1 matrix: row i marks [floor(i*size/out), ceil((i+1)*size/out))."""
    matrix = np.zeros((out, size))
    for i in range(out):
        start = (i * size) // out
        end = -((-(i + 1) * size) // out)
        matrix[i, start:end] = 1.0
    return matrix


# --------------------------------------------------------------------------------------------------
# Shape and activation layers
# --------------------------------------------------------------------------------------------------


def _normalize_dim(dim: int, ndim: int, where: str) -> int:
    """torch's dim wrapping, with its IndexError for an out-of-range dim."""
    if not -ndim <= dim < ndim:
        raise IndexError(
            f"{where}: dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], got {dim})"
        )
    return dim % ndim


class Flatten(Module):
    """Flatten axes ``start_dim..end_dim`` into one.

    PyTorch equivalent: ``torch.nn.Flatten(start_dim=1, end_dim=-1)``.

    Flattens in the array's own order: after an NHWC conv stack that is (H, W, C), whereas torch
    flattens (C, H, W); ``fnml.interop`` permutes the next Linear's weight accordingly.

    Example::

        Flatten()(jnp.ones((8, 7, 7, 64))).shape     # (8, 3136)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        for name, value in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"Flatten: {name} must be an int, got {name}={value!r}")
        self.start_dim = start_dim
        self.end_dim = end_dim

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        ndim = max(x.ndim, 1)
        start = _normalize_dim(self.start_dim, ndim, "Flatten")
        end = _normalize_dim(self.end_dim, ndim, "Flatten")
        if start > end:
            raise ValueError(
                f"Flatten: start_dim={self.start_dim} must not come after end_dim={self.end_dim} for a {x.ndim}-D input"
            )
        shape = x.shape if x.ndim else (1,)
        # (..., d_start, ..., d_end, ...) -> (..., d_start * ... * d_end, ...)
        return x.reshape(shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :])

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Identity(Module):
    """Return the input unchanged. PyTorch equivalent: ``torch.nn.Identity()``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x


class ReLU(Module):
    """``max(x, 0)``; gradient 0 at x = 0 as in torch. PyTorch equivalent: ``torch.nn.ReLU()``.

    Example::

        ReLU()(jnp.array([-1.0, 0.0, 2.0]))    # [0., 0., 2.]
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


class LeakyReLU(Module):
    """``x if x > 0 else negative_slope * x``. PyTorch equivalent: ``torch.nn.LeakyReLU(0.01)``.

    The gradient at exactly 0 is ``negative_slope`` as in torch (``jax.nn.leaky_relu`` gives 1 there).

    Example::

        LeakyReLU(0.1)(jnp.array([-1.0, 2.0]))    # [-0.1, 2.]
    """

    def __init__(self, negative_slope: float = 0.01):
        check_number("negative_slope", negative_slope, where="LeakyReLU")
        self.negative_slope = negative_slope

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        return jnp.where(x > 0, x, x * jnp.asarray(self.negative_slope, x.dtype))

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    """Gaussian error linear unit, exact (erf) by default as in torch.

    PyTorch equivalent: ``torch.nn.GELU(approximate="none")``.

    ``approximate="none"``: ``x * Phi(x)`` with the erf; ``"tanh"``: torch's tanh approximation.
    ``jax.nn.gelu`` defaults to the tanh approximation (about 4.7e-4 off torch's default).

    Example::

        GELU()(jnp.array([1.0]))    # [0.8413447]
    """

    def __init__(self, approximate: str = "none"):
        check_choice("approximate", approximate, ("none", "tanh"), where="GELU")
        self.approximate = approximate

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=self.approximate == "tanh")

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    """Hyperbolic tangent. PyTorch equivalent: ``torch.nn.Tanh()``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.tanh(x)


class Sigmoid(Module):
    """Logistic ``1 / (1 + exp(-x))``. PyTorch equivalent: ``torch.nn.Sigmoid()``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(x)


class _SoftmaxBase(Module):
    """Shared ``dim`` handling for Softmax / LogSoftmax."""

    _name = "Softmax"

    def __init__(self, dim: int):
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise TypeError(f"{self._name}: dim must be an int (torch's implicit dim is deprecated), got dim={dim!r}")
        self.dim = dim

    def _axis(self, x: jax.Array) -> int:
        return _normalize_dim(self.dim, max(x.ndim, 1), self._name)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_SoftmaxBase):
    """``exp(x) / sum(exp(x))`` along ``dim``. PyTorch equivalent: ``torch.nn.Softmax(dim)``.

    ``dim`` is required (torch's implicit choice is deprecated there). Example::

        Softmax(dim=-1)(jnp.array([[1.0, 2.0]]))
    """

    _name = "Softmax"

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        return jax.nn.softmax(x, axis=self._axis(x))


class LogSoftmax(_SoftmaxBase):
    """``x - logsumexp(x)`` along ``dim``. PyTorch equivalent: ``torch.nn.LogSoftmax(dim)``.

    Example::

        LogSoftmax(dim=1)(jnp.array([[1.0, 2.0]]))
    """

    _name = "LogSoftmax"

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        return jax.nn.log_softmax(x, axis=self._axis(x))


# --------------------------------------------------------------------------------------------------
# Containers and the tutorial model
# --------------------------------------------------------------------------------------------------


class Sequential(Module):
    """Apply layers in order; indexable, sliceable, iterable and sized like torch's.

    PyTorch equivalent: ``torch.nn.Sequential(*layers)``.

    Children live in the attribute ``layers`` (an ``nnx.List``); child ``i``'s torch state_dict prefix is
    ``"i."`` (``fnml.interop`` drops the ``layers`` path component). ``seq[i]`` is a layer, ``seq[a:b]``
    a new Sequential sharing those layers, ``len(seq)`` and ``for layer in seq`` work as in torch.
    Difference: a slice renumbers its children from 0 (torch keeps the original names, ``(5): ...``).
    Children must be modules, as in torch (wrap functions: ``ReLU()`` rather than ``jax.nn.relu``).

    Example::

        model = Sequential(Linear(2, 4, rngs=rngs), ReLU(), Linear(4, 1, rngs=rngs))
        model[0].kernel.shape     # (2, 4)
    """

    def __init__(self, *layers: nnx.Module):
        for index, layer in enumerate(layers):
            if not isinstance(layer, nnx.Module):
                raise TypeError(
                    f"Sequential: layer {index} must be a module (e.g. layers.ReLU() rather than "
                    f"jax.nn.relu), got {type(layer).__name__}"
                )
        self.layers = nnx.List(layers)

    def __call__(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[nnx.Module]:
        return iter(self.layers)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return Sequential(*list(self.layers)[index])
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"Sequential indices must be int or slice, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"Sequential: index {index} is out of range for {len(self)} layers")
        return self.layers[index]


class SimpleNN(Module):
    """The tutorial's network: ``fc2(relu(fc1(x)))`` with ``fc1 = Linear(2, 2)``, ``fc2 = Linear(2, 1)``.

    PyTorch equivalent: the tutorial's ``class SimpleNN(nn.Module)``; its state_dict keys are torch's
    (``fc1.weight``, ``fc1.bias``, ``fc2.weight``, ``fc2.bias``) through ``fnml.interop``.

    Shapes: ``x: (N, 2) -> (N, 1)``. ``print(model)`` shows the same tree as torch.

    Example::

        model = SimpleNN(rngs=nnx.Rngs(0))
        print(model)
        y = model(jnp.ones((1, 2)))
    """

    def __init__(self, *, dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        self.fc1 = Linear(2, 2, dtype=dtype, param_dtype=param_dtype, rngs=rngs)  # input -> hidden
        self.fc2 = Linear(2, 1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)  # hidden -> output

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu(self.fc1(x))  # ReLU activation, as torch.relu in the tutorial
        return self.fc2(x)


# --------------------------------------------------------------------------------------------------
# Recurrent layers live in fnml/recurrent.py (their own module: the scan, the hand-written backward);
# re-exported here so `layers.LSTM` reads like `nn.LSTM`.
# --------------------------------------------------------------------------------------------------
from fnml.recurrent import GRU, LSTM, RNN  # noqa: E402
