"""functional.linear and the normalisation family (functional ops and layers) against real torch.

Every op: forward AND gradients (input and every parameter) in float64 (exactness, <= 1e-12) and float32
(the table's working tolerance), torch's layout for the functional ops and channels-last for the layers
(``channels_last=True`` checked against the same numbers). Running statistics are compared after train
steps; ``print(layer)`` equals torch's text; init equals torch's exactly (constant inits); every bad
argument raises with a message. ``function_parity`` / ``module_parity`` are reused by the attention and
transformer tests.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from flax import nnx
from helpers import DTYPES, assert_trees_close, max_abs_diff, torch_dtype

from fnml import functional as F
from fnml import interop, layers

# dtype name -> torch dtype, from helpers' one map (test_attention, test_transformer and
# test_fuzz_norm_attention import it from here).
TORCH = {name: torch_dtype(name) for name in DTYPES}


def _data(shape, dtype, seed=0, *, scale=1.0, offset=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + offset).astype(dtype)


def _cotangent(shape, seed=99):
    return np.random.default_rng(seed).standard_normal(shape)


def _grad_or_zeros(tensor):
    return tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)


def function_parity(torch_fn, fnml_fn, arrays, dtype, *, constants=None, out_index=None, atol=None):
    """Compare ``fnml_fn(**arrays, **constants)`` with ``torch_fn`` (same arguments): output and d/d(arrays).

    ``arrays``: name -> float numpy array (differentiated); ``constants``: name -> anything (masks, flags).
    ``out_index`` picks one output of a tuple-returning op; ``atol`` overrides the table's (the fuzz tests
    scale it with the data's magnitude). Returns the max |difference| over everything.
    """
    return functions_parity({"case": (torch_fn, fnml_fn, arrays, constants, out_index)}, dtype, atol=atol)


def functions_parity(cases, dtype, *, atol=None):
    """:func:`function_parity` over several independent cases, with ONE compiled program for all of them.

    ``cases``: case name -> ``(torch_fn, fnml_fn, arrays, constants[, out_index])``. Each case gets its own
    torch reference and cotangent; the compiled objective is the sum of the cases' objectives, whose gradient
    w.r.t. one case's arrays is exactly that case's own gradient (the other terms do not depend on them).
    Differences are reported under the case's name. Returns the max |difference| over every case.
    """
    expected, cotangents, j_consts, fnml_fns, out_indices, inputs = {}, {}, {}, {}, {}, {}
    for name, case in cases.items():
        torch_fn, fnml_fn, arrays, constants = case[:4]
        out_index = case[4] if len(case) > 4 else None
        constants = dict(constants or {})
        t_arrays = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
        t_consts = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in constants.items()}
        out_t = torch_fn(**t_arrays, **t_consts)
        out_t = out_t if out_index is None else out_t[out_index]
        cotangents[name] = _cotangent(tuple(out_t.shape))
        (out_t * torch.tensor(cotangents[name], dtype=out_t.dtype)).sum().backward()
        expected[name] = {"out": out_t, **{f"d_{k}": _grad_or_zeros(t) for k, t in t_arrays.items()}}
        j_consts[name] = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in constants.items()}
        fnml_fns[name], out_indices[name] = fnml_fn, out_index
        inputs[name] = {k: jnp.asarray(v) for k, v in arrays.items()}

    def loss(diff):
        total, outs = 0.0, {}
        for name in cases:
            out = fnml_fns[name](**diff[name], **j_consts[name])
            out = out if out_indices[name] is None else out[out_indices[name]]
            total = total + jnp.sum(out * jnp.asarray(cotangents[name], out.dtype))
            outs[name] = out
        return total, outs

    (_, outs), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(inputs)
    actual = {name: {"out": outs[name], **{f"d_{k}": g for k, g in grads[name].items()}} for name in cases}
    if len(cases) == 1:  # one case: the paths of the single-case helper (no case name)
        (actual,), (expected,) = actual.values(), expected.values()
    assert_trees_close(actual, expected, dtype=dtype, atol=atol)
    return max_abs_diff(actual, expected)


def module_parity(
    torch_module,
    fnml_module,
    inputs,
    dtype,
    *,
    to_fnml=lambda x: x,
    from_fnml=lambda y: y,
    call_torch=None,
    call_fnml=None,
    constants=None,
    atol=None,
):
    """Copy torch's weights into ``fnml_module`` (interop.load_state_dict), then compare the output and the
    gradients of every input and every parameter (torch names and layouts). Returns the max |difference|.

    ``inputs``: list of float numpy arrays in torch's layout (``to_fnml`` converts each for fnml,
    ``from_fnml`` converts the output back); ``constants``: keyword arguments for both calls (masks)."""
    case = dict(
        torch_module=torch_module,
        fnml_module=fnml_module,
        inputs=inputs,
        to_fnml=to_fnml,
        from_fnml=from_fnml,
        call_torch=call_torch,
        call_fnml=call_fnml,
        constants=constants,
    )
    return modules_parity({"case": case}, dtype, atol=atol)


def modules_parity(cases, dtype, *, atol=None):
    """:func:`module_parity` over several independent cases, with ONE compiled program for all of them.

    ``cases``: case name -> dict of module_parity's arguments (``torch_module``, ``fnml_module``, ``inputs``
    and optionally ``to_fnml``, ``from_fnml``, ``call_torch``, ``call_fnml``, ``constants``). The compiled
    objective is the sum of the cases' objectives: each case's gradients are exactly its own. Differences are
    reported under the case's name. Returns the max |difference| over every case.
    """
    expected, prepared, arguments = {}, {}, {}
    for name, case in cases.items():
        torch_module, fnml_module = case["torch_module"], case["fnml_module"]
        interop.load_state_dict(fnml_module, torch_module.state_dict())
        constants = dict(case.get("constants") or {})
        call_torch = case.get("call_torch") or (lambda m, *xs, **kw: m(*xs, **kw))
        t_inputs = [torch.tensor(x, requires_grad=True) for x in case["inputs"]]
        t_consts = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in constants.items()}
        torch_module.zero_grad(set_to_none=True)
        out_t = call_torch(torch_module, *t_inputs, **t_consts)
        cotangent = _cotangent(tuple(out_t.shape))
        (out_t * torch.tensor(cotangent, dtype=out_t.dtype)).sum().backward()
        named = dict(torch_module.named_parameters())
        expected[name] = {
            "out": out_t,
            "inputs": [_grad_or_zeros(t) for t in t_inputs],
            "params": {param: _grad_or_zeros(p) for param, p in named.items()},
        }
        graphdef, params, rest = nnx.split(fnml_module, nnx.Param, ...)
        prepared[name] = dict(
            graphdef=graphdef,
            named=named,
            cotangent=cotangent,
            consts={k: jnp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in constants.items()},
            call=case.get("call_fnml") or (lambda m, *xs, **kw: m(*xs, **kw)),
            to_fnml=case.get("to_fnml") or (lambda x: x),
            from_fnml=case.get("from_fnml") or (lambda y: y),
        )
        arguments[name] = (params, [jnp.asarray(x) for x in case["inputs"]], rest)

    def loss(params, xs, rest):
        total, outs = 0.0, {}
        for name in cases:
            case = prepared[name]
            # Fresh Variables at this trace level (a layer may update its running statistics in the call).
            model = nnx.merge(case["graphdef"], params[name], jax.tree.map(lambda v: v, rest[name]))
            out = case["from_fnml"](case["call"](model, *[case["to_fnml"](x) for x in xs[name]], **case["consts"]))
            total = total + jnp.sum(out * jnp.asarray(case["cotangent"], out.dtype))
            outs[name] = out
        return total, outs

    params, xs, rest = ({name: arguments[name][i] for name in cases} for i in range(3))
    (_, outs), (param_grads, input_grads) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        params, xs, rest
    )
    actual = {}
    for name in cases:
        grad_model = nnx.merge(prepared[name]["graphdef"], param_grads[name], rest[name])
        named = prepared[name]["named"]
        fnml_param_grads = {k: v for k, v in interop.state_dict(grad_model).items() if k in named}
        actual[name] = {"out": outs[name], "inputs": list(input_grads[name]), "params": fnml_param_grads}
    if len(cases) == 1:  # one case: the paths of the single-case helper (no case name)
        (actual,), (expected,) = actual.values(), expected.values()
    assert_trees_close(actual, expected, dtype=dtype, atol=atol)
    return max_abs_diff(actual, expected)


def _nchw_to_nhwc(x):
    return jnp.moveaxis(x, 1, -1)  # (N, C, *) -> (N, *, C)


def _nhwc_to_nchw(y):
    return jnp.moveaxis(y, -1, 1)  # (N, *, C) -> (N, C, *)


# --------------------------------------------------------------------------------------------------
# functional.linear and the Linear layer on top of it
# --------------------------------------------------------------------------------------------------

LINEAR_CASES = {
    "2d-bias": ((5, 3), True),
    "3d-bias": ((2, 4, 3), True),
    "1d-bias": ((3,), True),
    "2d-no-bias": ((5, 3), False),
}


def test_linear_matches_torch(dtype):
    cases = {}
    for case, (shape, with_bias) in LINEAR_CASES.items():
        arrays = {"input": _data(shape, dtype, 1), "weight": _data((4, 3), dtype, 2)}
        if with_bias:
            arrays["bias"] = _data((4,), dtype, 3)
        cases[case] = (TF.linear, F.linear, arrays, None)
    functions_parity(cases, dtype)


def test_linear_layer_is_functional_linear_on_the_transposed_kernel(dtype):
    fc = layers.Linear(3, 4, param_dtype=dtype, rngs=nnx.Rngs(0))
    x = jnp.asarray(_data((5, 3), dtype))
    np.testing.assert_array_equal(fc(x), F.linear(x, fc.kernel[...].T, fc.bias[...]))
    module_parity(torch.nn.Linear(3, 4).to(torch_dtype(dtype)), fc, [_data((2, 5, 3), dtype)], dtype)


# --------------------------------------------------------------------------------------------------
# Functional normalisation ops, torch's layout
# --------------------------------------------------------------------------------------------------

LAYER_NORM_CASES = {
    "int-affine": ((4, 5), 5, True, True),
    "tuple-affine": ((2, 3, 4), (3, 4), True, True),
    "weight-only": ((4, 5), (5,), True, False),
    "plain": ((3, 5), 5, False, False),
}


def _layer_norm_case(shape, normalized, with_weight, with_bias, dtype):
    trailing = (normalized,) if isinstance(normalized, int) else normalized
    arrays = {"input": _data(shape, dtype, 1, scale=3.0, offset=2.0)}
    if with_weight:
        arrays["weight"] = _data(trailing, dtype, 2)
    if with_bias:
        arrays["bias"] = _data(trailing, dtype, 3)
    torch_shape = list(trailing)
    return (
        lambda **kw: TF.layer_norm(normalized_shape=torch_shape, eps=1e-5, **kw),
        lambda **kw: F.layer_norm(normalized_shape=normalized, eps=1e-5, **kw),
        arrays,
        None,
    )


def test_layer_norm_matches_torch(dtype):
    cases = {case: _layer_norm_case(*spec, dtype) for case, spec in LAYER_NORM_CASES.items()}
    functions_parity(cases, dtype)


RMS_NORM_CASES = {
    "eps-None-int": ((4, 5), 5, None, True),
    "eps-None-tuple": ((2, 3, 4), (3, 4), None, True),
    "eps-1e-3": ((4, 5), 5, 1e-3, True),
    "no-weight": ((4, 5), (5,), None, False),
    "tiny-values-eps-None": ((3, 4), 4, None, True),
}


def _rms_norm_case(case, dtype):
    shape, normalized, eps, with_weight = RMS_NORM_CASES[case]
    trailing = (normalized,) if isinstance(normalized, int) else normalized
    # Tiny inputs make eps matter: torch's eps=None is the dtype's machine epsilon.
    scale = 1e-4 if case.startswith("tiny") else 1.0
    arrays = {"input": _data(shape, dtype, 1, scale=scale)}
    if with_weight:
        arrays["weight"] = _data(trailing, dtype, 2)
    return (
        lambda **kw: TF.rms_norm(normalized_shape=list(trailing), eps=eps, **kw),
        lambda **kw: F.rms_norm(normalized_shape=normalized, eps=eps, **kw),
        arrays,
        None,
    )


def test_rms_norm_matches_torch(dtype):
    functions_parity({case: _rms_norm_case(case, dtype) for case in RMS_NORM_CASES}, dtype)


def test_rms_norm_default_eps_is_the_dtype_epsilon():
    # With eps=None the result must differ from eps=0 by exactly what finfo(dtype).eps makes.
    x = np.full((1, 4), 1e-4)
    for dtype, eps in (("float64", np.finfo(np.float64).eps), ("float32", np.finfo(np.float32).eps)):
        ours = F.rms_norm(jnp.asarray(x.astype(dtype)), 4)
        explicit = F.rms_norm(jnp.asarray(x.astype(dtype)), 4, eps=float(eps))
        np.testing.assert_array_equal(ours, explicit)
        expected = TF.rms_norm(torch.tensor(x.astype(dtype)), [4])
        np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-6)


GROUP_NORM_CASES = {
    "groups1-4d": ((2, 4, 3, 3), 1, True),
    "groups2-4d": ((2, 4, 3, 3), 2, True),
    "groups4-3d": ((2, 4, 5), 4, True),
    "groups2-2d": ((3, 4), 2, True),
    "groups2-no-affine": ((2, 6, 5), 2, False),
}


def _group_norm_case(shape, groups, affine, channels_last, dtype):
    arrays = {"input": _data(shape, dtype, 1, scale=2.0, offset=1.0)}
    if affine:
        arrays["weight"] = _data((shape[1],), dtype, 2)
        arrays["bias"] = _data((shape[1],), dtype, 3)
    move = _nchw_to_nhwc if channels_last else (lambda x: x)
    back = _nhwc_to_nchw if channels_last else (lambda y: y)
    return (
        lambda **kw: TF.group_norm(num_groups=groups, **kw),
        lambda input, **kw: back(F.group_norm(move(input), groups, channels_last=channels_last, **kw)),
        arrays,
        None,
    )


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCHW", "channels-last"])
def test_group_norm_matches_torch(channels_last, dtype):
    cases = {case: _group_norm_case(*spec, channels_last, dtype) for case, spec in GROUP_NORM_CASES.items()}
    functions_parity(cases, dtype)


BATCH_NORM_CASES = {
    "train-running": (True, True, 0.1),
    "train-no-running": (True, False, 0.1),
    "eval-running": (False, True, 0.1),
    "train-momentum-0.3": (True, True, 0.3),
}


@pytest.mark.parametrize("channels_last", [False, True], ids=["NCL", "channels-last"])
def test_batch_norm_with_stats_matches_torch_and_its_in_place_update(channels_last, dtype):
    x = _data((4, 3, 5), dtype, 1, scale=2.0, offset=1.0)
    weight, bias = _data((3,), dtype, 2), _data((3,), dtype, 3)
    mean0, var0 = _data((3,), dtype, 4), np.abs(_data((3,), dtype, 5)) + 0.5
    move = _nchw_to_nhwc if channels_last else (lambda v: v)
    back = _nhwc_to_nchw if channels_last else (lambda v: v)
    cases, runnings = {}, {}
    for case, (training, with_running, momentum) in BATCH_NORM_CASES.items():
        running = (torch.tensor(mean0), torch.tensor(var0)) if with_running else (None, None)
        runnings[case] = running

        def torch_fn(input, weight, bias, running=running, training=training, momentum=momentum):
            return TF.batch_norm(input, *running, weight, bias, training, momentum, 1e-5)

        def fnml_fn(input, weight, bias, with_running=with_running, training=training, momentum=momentum):
            stats = (jnp.asarray(mean0), jnp.asarray(var0)) if with_running else (None, None)
            out, _, _ = F.batch_norm_with_stats(
                move(input), *stats, weight, bias, training, momentum, 1e-5, channels_last=channels_last
            )
            return back(out)

        cases[case] = (torch_fn, fnml_fn, {"input": x, "weight": weight, "bias": bias}, None)
    functions_parity(cases, dtype)
    for case, (training, with_running, momentum) in BATCH_NORM_CASES.items():
        # torch updated `running` in place during the call above; fnml returns the new statistics.
        running = runnings[case]
        stats = (jnp.asarray(mean0), jnp.asarray(var0)) if with_running else (None, None)
        out, new_mean, new_var = F.batch_norm_with_stats(
            move(jnp.asarray(x)), *stats, weight, bias, training, momentum, 1e-5, channels_last=channels_last
        )
        if with_running:
            assert_trees_close({case: [new_mean, new_var]}, {case: list(running)}, dtype=dtype)
            np.testing.assert_array_equal(
                out, move(F.batch_norm(jnp.asarray(x), *stats, weight, bias, training, momentum, 1e-5)), err_msg=case
            )
        else:
            assert new_mean is None and new_var is None, case


INSTANCE_NORM_CASES = {
    "input-stats": (True, False, True),
    "input-stats-running": (True, True, True),
    "running-stats": (False, True, True),
    "input-stats-no-affine": (True, False, False),
}


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 4, 3)], ids=["1d", "2d"])
def test_instance_norm_with_stats_matches_torch(shape, dtype):
    x = _data(shape, dtype, 1, scale=2.0, offset=1.0)
    mean0, var0 = _data((3,), dtype, 4), np.abs(_data((3,), dtype, 5)) + 0.5
    cases, runnings = {}, {}
    for case, (use_input_stats, with_running, affine) in INSTANCE_NORM_CASES.items():
        arrays = {"input": x}
        if affine:
            arrays.update(weight=_data((3,), dtype, 2), bias=_data((3,), dtype, 3))
        running = (torch.tensor(mean0), torch.tensor(var0)) if with_running else (None, None)
        stats = (jnp.asarray(mean0), jnp.asarray(var0)) if with_running else (None, None)
        runnings[case] = running

        def torch_fn(running=running, use_input_stats=use_input_stats, **kw):
            return TF.instance_norm(
                running_mean=running[0], running_var=running[1], use_input_stats=use_input_stats, **kw
            )

        def fnml_fn(stats=stats, use_input_stats=use_input_stats, **kw):
            return F.instance_norm(running_mean=stats[0], running_var=stats[1], use_input_stats=use_input_stats, **kw)

        cases[case] = (torch_fn, fnml_fn, arrays, None)
    functions_parity(cases, dtype)
    for case, (use_input_stats, with_running, _) in INSTANCE_NORM_CASES.items():
        stats = (jnp.asarray(mean0), jnp.asarray(var0)) if with_running else (None, None)
        _, new_mean, new_var = F.instance_norm_with_stats(jnp.asarray(x), *stats, use_input_stats=use_input_stats)
        if with_running:
            assert_trees_close({case: [new_mean, new_var]}, {case: list(runnings[case])}, dtype=dtype)


def _lrn_case(size, shape, dtype):
    return (
        lambda input: TF.local_response_norm(input, size, alpha=0.3, beta=0.75, k=2.0),
        lambda input: F.local_response_norm(input, size, alpha=0.3, beta=0.75, k=2.0),
        {"input": _data(shape, dtype, 1, scale=2.0)},
        None,
    )


LRN_SHAPES = {"3d": (2, 6, 5), "4d": (2, 6, 3, 4)}
LRN_SIZES = (1, 2, 3, 5)


def test_local_response_norm_matches_torch(dtype):
    cases = {
        f"size{size}-{rank}": _lrn_case(size, shape, dtype) for rank, shape in LRN_SHAPES.items() for size in LRN_SIZES
    }
    functions_parity(cases, dtype)

    # channels_last=True is the same computation on the moved axis, bit for bit (one program for every case).
    @jax.jit
    def both_layouts(xs):
        return {
            key: (
                F.local_response_norm(_nchw_to_nhwc(x), size, channels_last=True),
                _nchw_to_nhwc(F.local_response_norm(x, size)),
            )
            for (key, size), x in xs.items()
        }

    xs = {(rank, size): jnp.asarray(_data(shape, dtype, 1)) for rank, shape in LRN_SHAPES.items() for size in LRN_SIZES}
    for (rank, size), (channels_last, moved) in both_layouts(xs).items():
        np.testing.assert_array_equal(channels_last, moved, err_msg=f"size {size}, {rank}")


# --------------------------------------------------------------------------------------------------
# Layers: torch's modules, channels-last data
# --------------------------------------------------------------------------------------------------


# (groups, torch-layout shape); a group of one value per sample (groups=4 on (N, 4)) is all rounding noise.
GROUP_LAYER_CASES = {
    "NCHW-g1": (1, (2, 4, 3, 3)),
    "NCHW-g4": (4, (2, 4, 3, 3)),
    "NCL-g2": (2, (2, 4, 5)),
    "NC-g2": (2, (3, 4)),
}


def test_group_norm_layer_matches_torch(dtype):
    cases = {}
    for case, (groups, shape) in GROUP_LAYER_CASES.items():
        torch_layer = torch.nn.GroupNorm(groups, 4).to(torch_dtype(dtype))
        with torch.no_grad():  # non-trivial affine parameters
            torch_layer.weight.copy_(torch.tensor(_data((4,), dtype, 7)))
            torch_layer.bias.copy_(torch.tensor(_data((4,), dtype, 8)))
        fnml_layer = layers.GroupNorm(groups, 4, param_dtype=dtype)
        cases[case] = dict(
            torch_module=torch_layer,
            fnml_module=fnml_layer,
            inputs=[_data(shape, dtype, 1)],
            to_fnml=_nchw_to_nhwc,
            from_fnml=_nhwc_to_nchw,
        )
    modules_parity(cases, dtype)


INSTANCE_LAYER_CASES = {
    "plain": (False, False),
    "affine": (True, False),
    "track": (False, True),
    "affine-track": (True, True),
}


@pytest.mark.parametrize("kind", ["InstanceNorm1d", "InstanceNorm2d"])
def test_instance_norm_layers_train_and_eval_match_torch(kind, dtype):
    shape = (3, 4, 5) if kind == "InstanceNorm1d" else (3, 4, 3, 3)
    pairs = {}
    for case, (affine, track) in INSTANCE_LAYER_CASES.items():
        torch_cls = getattr(torch.nn, kind)
        torch_layer = torch_cls(4, affine=affine, track_running_stats=track, momentum=0.2).to(torch_dtype(dtype))
        if affine:
            with torch.no_grad():
                torch_layer.weight.copy_(torch.tensor(_data((4,), dtype, 7)))
                torch_layer.bias.copy_(torch.tensor(_data((4,), dtype, 8)))
        fnml_layer = getattr(layers, kind)(4, affine=affine, track_running_stats=track, momentum=0.2, param_dtype=dtype)
        interop.load_state_dict(fnml_layer, torch_layer.state_dict())
        # Two training steps update the running statistics (when tracked) identically.
        for seed in (11, 12):
            x = _data(shape, dtype, seed, scale=2.0, offset=1.0)
            expected = torch_layer(torch.tensor(x))
            actual = _nhwc_to_nchw(fnml_layer(_nchw_to_nhwc(jnp.asarray(x))))
            assert_trees_close({case: actual}, {case: expected}, dtype=dtype)
        assert_trees_close({case: interop.state_dict(fnml_layer)}, {case: dict(torch_layer.state_dict())}, dtype=dtype)
        pairs[case] = (torch_layer, fnml_layer)
    # Forward + every gradient, in training mode and then in eval mode (running statistics when tracked).
    for mode in ("train", "eval"):
        cases = {}
        for case, (torch_layer, fnml_layer) in pairs.items():
            getattr(torch_layer, mode)()
            getattr(fnml_layer, mode)()
            cases[case] = dict(
                torch_module=torch_layer,
                fnml_module=fnml_layer,
                inputs=[_data(shape, dtype, 13, scale=2.0)],
                to_fnml=_nchw_to_nhwc,
                from_fnml=_nhwc_to_nchw,
            )
        modules_parity(cases, dtype)


@pytest.mark.parametrize("kind", ["InstanceNorm1d", "InstanceNorm2d"])
def test_instance_norm_unbatched_input_matches_torch(kind, dtype):
    shape = (4, 5) if kind == "InstanceNorm1d" else (4, 3, 3)
    torch_layer = getattr(torch.nn, kind)(4, affine=True).to(torch_dtype(dtype))
    fnml_layer = getattr(layers, kind)(4, affine=True, param_dtype=dtype)
    module_parity(
        torch_layer,
        fnml_layer,
        [_data(shape, dtype, 1)],
        dtype,
        to_fnml=lambda x: jnp.moveaxis(x, 0, -1),  # (C, *) -> (*, C)
        from_fnml=lambda y: jnp.moveaxis(y, -1, 0),
    )


RMS_LAYER_CASES = {
    "int-eps-None": (5, None, True),
    "tuple-eps-None": ((3, 5), None, True),
    "eps-1e-6": (5, 1e-6, True),
    "no-affine": ((5,), None, False),
}


def test_rms_norm_layer_matches_torch(dtype):
    cases = {}
    for case, (normalized, eps, affine) in RMS_LAYER_CASES.items():
        torch_layer = torch.nn.RMSNorm(normalized, eps=eps, elementwise_affine=affine).to(torch_dtype(dtype))
        if affine:
            with torch.no_grad():
                torch_layer.weight.copy_(torch.tensor(_data(torch_layer.weight.shape, dtype, 7)))
        fnml_layer = layers.RMSNorm(normalized, eps=eps, elementwise_affine=affine, param_dtype=dtype)
        cases[case] = dict(torch_module=torch_layer, fnml_module=fnml_layer, inputs=[_data((2, 3, 5), dtype, 1)])
    modules_parity(cases, dtype)


def test_layer_norm_and_batch_norm_layers_still_match_torch(dtype):
    ln_torch = torch.nn.LayerNorm((3, 5)).to(torch_dtype(dtype))
    with torch.no_grad():
        ln_torch.weight.copy_(torch.tensor(_data((3, 5), dtype, 7)))
    module_parity(
        ln_torch, layers.LayerNorm((3, 5), param_dtype=dtype), [_data((2, 3, 5), dtype, 1, offset=30.0)], dtype
    )
    bn_torch = torch.nn.BatchNorm1d(4, momentum=None).to(torch_dtype(dtype))
    bn = layers.BatchNorm1d(4, momentum=None, param_dtype=dtype)
    interop.load_state_dict(bn, bn_torch.state_dict())
    for seed in (1, 2, 3):
        x = _data((6, 4, 3), dtype, seed)
        assert_trees_close(_nhwc_to_nchw(bn(_nchw_to_nhwc(jnp.asarray(x)))), bn_torch(torch.tensor(x)), dtype=dtype)
    assert_trees_close(interop.state_dict(bn), dict(bn_torch.state_dict()), dtype=dtype)


def test_local_response_norm_layer_matches_torch(dtype):
    module_parity(
        torch.nn.LocalResponseNorm(3, alpha=0.2, beta=0.6, k=1.5),
        layers.LocalResponseNorm(3, alpha=0.2, beta=0.6, k=1.5),
        [_data((2, 5, 3, 3), dtype, 1, scale=2.0)],
        dtype,
        to_fnml=_nchw_to_nhwc,
        from_fnml=_nhwc_to_nchw,
    )


REPRS = {
    "GroupNorm": (lambda: layers.GroupNorm(2, 4), lambda: torch.nn.GroupNorm(2, 4)),
    "GroupNorm-no-affine": (
        lambda: layers.GroupNorm(2, 4, affine=False),
        lambda: torch.nn.GroupNorm(2, 4, affine=False),
    ),
    "GroupNorm-no-bias": (lambda: layers.GroupNorm(1, 3, bias=False), lambda: torch.nn.GroupNorm(1, 3, bias=False)),
    "InstanceNorm1d": (lambda: layers.InstanceNorm1d(3), lambda: torch.nn.InstanceNorm1d(3)),
    "InstanceNorm2d-affine-track": (
        lambda: layers.InstanceNorm2d(3, eps=1e-3, affine=True, track_running_stats=True),
        lambda: torch.nn.InstanceNorm2d(3, eps=1e-3, affine=True, track_running_stats=True),
    ),
    "RMSNorm": (lambda: layers.RMSNorm(4), lambda: torch.nn.RMSNorm(4)),
    "RMSNorm-tuple-eps": (lambda: layers.RMSNorm((2, 3), eps=1e-3), lambda: torch.nn.RMSNorm((2, 3), eps=1e-3)),
    "LocalResponseNorm": (lambda: layers.LocalResponseNorm(3), lambda: torch.nn.LocalResponseNorm(3)),
    "LocalResponseNorm-settings": (
        lambda: layers.LocalResponseNorm(5, alpha=0.01, beta=0.5, k=2.0),
        lambda: torch.nn.LocalResponseNorm(5, alpha=0.01, beta=0.5, k=2.0),
    ),
}


@pytest.mark.parametrize("case", list(REPRS), ids=list(REPRS))
def test_print_matches_torch(case):
    make_fnml, make_torch = REPRS[case]
    assert str(make_fnml()) == str(make_torch())


INIT_CASES = {
    "GroupNorm": (lambda: layers.GroupNorm(2, 6), lambda: torch.nn.GroupNorm(2, 6)),
    "InstanceNorm1d": (
        lambda: layers.InstanceNorm1d(6, affine=True, track_running_stats=True),
        lambda: torch.nn.InstanceNorm1d(6, affine=True, track_running_stats=True),
    ),
    "RMSNorm": (lambda: layers.RMSNorm((2, 3)), lambda: torch.nn.RMSNorm((2, 3))),
}


@pytest.mark.parametrize("case", list(INIT_CASES), ids=list(INIT_CASES))
def test_init_and_state_dict_keys_match_torch_exactly(case):
    fnml_layer, torch_layer = INIT_CASES[case][0](), INIT_CASES[case][1]()
    ours, theirs = interop.state_dict(fnml_layer), dict(torch_layer.state_dict())
    assert list(ours) == list(theirs)
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name].numpy())


def test_instance_norm_momentum_none_keeps_the_running_stats():
    # torch passes momentum 0.0 when momentum=None: the running statistics never move.
    fnml_layer = layers.InstanceNorm1d(2, momentum=None, track_running_stats=True)
    torch_layer = torch.nn.InstanceNorm1d(2, momentum=None, track_running_stats=True)
    x = _data((3, 2, 4), "float32", 1, offset=5.0)
    fnml_layer(_nchw_to_nhwc(jnp.asarray(x)))
    torch_layer(torch.tensor(x))
    assert_trees_close(interop.state_dict(fnml_layer), dict(torch_layer.state_dict()), dtype="float32")
    np.testing.assert_array_equal(fnml_layer.running_mean[...], np.zeros(2))


def test_instance_norm_channel_mismatch_warns_like_torch_without_affine():
    with pytest.warns(UserWarning, match="does not match num_features=3"):
        layers.InstanceNorm1d(3)(jnp.ones((2, 5, 4)))


# --------------------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------------------

ERRORS = {
    "linear-weight-rank": (lambda: F.linear(jnp.ones((2, 3)), jnp.ones(3)), ValueError, "weight must be 2-D"),
    "linear-shape": (lambda: F.linear(jnp.ones((2, 3)), jnp.ones((4, 5))), ValueError, r"expected input \(\*, 5\)"),
    "linear-bias-shape": (
        lambda: F.linear(jnp.ones((2, 3)), jnp.ones((4, 3)), jnp.ones(3)),
        ValueError,
        r"bias must have shape \(4,\)",
    ),
    "linear-int-input": (lambda: F.linear(jnp.ones((2, 3), int), jnp.ones((4, 3))), TypeError, "floating-point"),
    "layer-norm-shape": (lambda: F.layer_norm(jnp.ones((2, 3)), 4), ValueError, "trailing axes must be"),
    "layer-norm-normalized-shape": (lambda: F.layer_norm(jnp.ones((2, 3)), 0), ValueError, "normalized_shape must"),
    "layer-norm-weight-shape": (
        lambda: F.layer_norm(jnp.ones((2, 3)), 3, jnp.ones(2)),
        ValueError,
        r"weight must have shape \(3,\)",
    ),
    "rms-norm-eps-type": (lambda: F.rms_norm(jnp.ones((2, 3)), 3, eps="1e-5"), TypeError, "eps must be a number"),
    "group-norm-divisible": (
        lambda: F.group_norm(jnp.ones((2, 3, 4)), 2),
        ValueError,
        r"channels \(3\) to be divisible by num_groups=2",
    ),
    "group-norm-rank": (lambda: F.group_norm(jnp.ones(3), 1), ValueError, "at least 2 dimensions"),
    "group-norm-groups-type": (lambda: F.group_norm(jnp.ones((2, 4)), 2.0), TypeError, "num_groups must be"),
    "batch-norm-eval-needs-stats": (
        lambda: F.batch_norm(jnp.ones((3, 2)), None, None),
        ValueError,
        "running_mean must be defined in evaluation mode",
    ),
    "batch-norm-one-value": (
        lambda: F.batch_norm(jnp.ones((1, 2)), None, None, training=True),
        ValueError,
        "more than 1 value per channel",
    ),
    "batch-norm-stats-pair": (
        lambda: F.batch_norm(jnp.ones((3, 2)), jnp.zeros(2), None, training=True),
        ValueError,
        "both be given or both be None",
    ),
    "batch-norm-stat-shape": (
        lambda: F.batch_norm(jnp.ones((3, 2)), jnp.zeros(3), jnp.ones(3)),
        ValueError,
        r"running_mean must have shape \(2,\)",
    ),
    "batch-norm-training-type": (
        lambda: F.batch_norm(jnp.ones((3, 2)), None, None, training=1),
        TypeError,
        "training must be a bool",
    ),
    "instance-norm-one-spatial": (
        lambda: F.instance_norm(jnp.ones((2, 3, 1))),
        ValueError,
        "more than 1 spatial element",
    ),
    "instance-norm-rank": (lambda: F.instance_norm(jnp.ones((2, 3))), ValueError, "batch, spatial and channel"),
    "lrn-rank": (lambda: F.local_response_norm(jnp.ones((2, 3)), 2), ValueError, "at least 3 dimensions"),
    "lrn-size": (lambda: F.local_response_norm(jnp.ones((2, 3, 4)), 0), ValueError, "size must be a positive"),
    "GroupNorm-divisible": (lambda: layers.GroupNorm(3, 4), ValueError, r"num_channels \(4\) must be divisible"),
    "GroupNorm-eps": (lambda: layers.GroupNorm(2, 4, eps=0.0), ValueError, "eps must be > 0"),
    "GroupNorm-affine-type": (lambda: layers.GroupNorm(2, 4, affine=1), TypeError, "affine must be a bool"),
    "GroupNorm-input": (lambda: layers.GroupNorm(2, 4)(jnp.ones((2, 3))), ValueError, r"channels-last input"),
    "InstanceNorm1d-rank": (lambda: layers.InstanceNorm1d(3)(jnp.ones((2, 3, 4, 3))), ValueError, "must be 2-D or 3-D"),
    "InstanceNorm2d-channels": (
        lambda: layers.InstanceNorm2d(3, affine=True)(jnp.ones((2, 4, 4, 2))),
        ValueError,
        "got an input with 2 channels",
    ),
    "InstanceNorm1d-momentum": (lambda: layers.InstanceNorm1d(3, momentum=2.0), ValueError, "momentum must be in"),
    "RMSNorm-shape": (lambda: layers.RMSNorm((2, 3))(jnp.ones((3, 2))), ValueError, "trailing axes must be"),
    "RMSNorm-normalized-shape": (lambda: layers.RMSNorm(()), ValueError, "normalized_shape must be"),
    "RMSNorm-eps": (lambda: layers.RMSNorm(3, eps=-1.0), ValueError, "eps must be >= 0"),
    "LocalResponseNorm-rank": (lambda: layers.LocalResponseNorm(2)(jnp.ones((2, 3))), ValueError, "at least 3"),
    "LocalResponseNorm-alpha": (lambda: layers.LocalResponseNorm(2, alpha="x"), TypeError, "alpha must be a number"),
}


@pytest.mark.parametrize("case", list(ERRORS), ids=list(ERRORS))
def test_bad_arguments_raise(case):
    build, error, match = ERRORS[case]
    with pytest.raises(error, match=match):
        build()
