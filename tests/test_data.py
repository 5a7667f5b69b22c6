"""fnml.data against torch.utils.data and scikit-learn: split sizes, batching, standardisation, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers import tolerance
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import TensorDataset
from torch.utils.data import random_split as torch_random_split

from fnml import data

SPLITS = [
    (10, [0.3, 0.3, 0.4]),
    (11, [0.5, 0.5]),
    (7, [0.1, 0.2, 0.7]),
    (1797, [0.7, 0.15, 0.15]),
    (5, [1 / 3, 1 / 3, 1 / 3]),
    (10, [3, 7]),
    (4, [0.0, 1.0]),
]


@pytest.mark.filterwarnings("ignore:Length of split at index:UserWarning")  # torch warns on empty splits
@pytest.mark.parametrize(("n", "lengths"), SPLITS, ids=[f"n{n}-{lengths}" for n, lengths in SPLITS])
def test_random_split_sizes_match_torch(n, lengths):
    torch_sizes = [len(s) for s in torch_random_split(range(n), lengths, generator=torch.Generator().manual_seed(0))]
    parts = data.random_split(jax.random.key(0), n, lengths)
    assert [len(p) for p in parts] == torch_sizes
    # Disjoint and covering: a permutation of range(n).
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))


def test_random_split_of_arrays_and_tuples_is_keyed():
    X = np.arange(20.0).reshape(10, 2)
    Y = np.arange(10.0)
    (x_a, y_a), (x_b, y_b) = data.random_split(jax.random.key(3), (X, Y), [0.8, 0.2])
    assert x_a.shape == (8, 2) and y_b.shape == (2,)
    np.testing.assert_array_equal(x_a[:, 0] / 2, y_a)  # rows stay paired
    idx_a, idx_b = data.random_split(jax.random.key(3), 10, [0.8, 0.2])
    np.testing.assert_array_equal(X[idx_a], x_a)
    only_x = data.random_split(jax.random.key(3), X, [8, 2])
    np.testing.assert_array_equal(only_x[1], x_b)
    other = data.random_split(jax.random.key(4), 10, [0.8, 0.2])
    assert not np.array_equal(other[0], idx_a)


@pytest.mark.parametrize(
    ("dataset", "lengths", "error", "match"),
    [
        (10, [3, 3], ValueError, "sum of lengths 6 does not equal the length of the dataset \\(10\\)"),
        (10, [1.5, -0.5], ValueError, "fraction at index 0 must be in \\[0, 1\\]"),
        (10, [], ValueError, "lengths must be a non-empty sequence"),
        (10, [2.5, 7.5], ValueError, "non-negative integers or fractions summing to 1"),
        (0, [1.0], ValueError, "the dataset is empty"),
        ((np.zeros((3, 2)), np.zeros(4)), [0.5, 0.5], ValueError, "same number of samples.*\\[3, 4\\]"),
        (np.zeros((0, 2)), [0.5, 0.5], ValueError, "the dataset is empty"),
    ],
    ids=[
        "sum-mismatch",
        "fraction-range",
        "empty-lengths",
        "non-integer-counts",
        "empty-n",
        "xy-mismatch",
        "empty-array",
    ],
)
def test_random_split_errors(dataset, lengths, error, match):
    with pytest.raises(error, match=match):
        data.random_split(jax.random.key(0), dataset, lengths)


def test_random_split_rejects_a_non_key():
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        data.random_split(0, 10, [0.5, 0.5])


def test_standardizer_matches_sklearn():
    rng = np.random.default_rng(0)
    X_train = rng.normal(3.0, 2.0, size=(50, 4))
    X_train[:, 2] = 5.0  # a constant feature: scale 1, like scikit-learn
    X_test = rng.normal(size=(7, 4))
    scaler = data.Standardizer.fit(X_train)
    reference = StandardScaler().fit(X_train)
    np.testing.assert_allclose(np.asarray(scaler.mean), reference.mean_, **tolerance("float64"))
    np.testing.assert_allclose(np.asarray(scaler.scale), reference.scale_, **tolerance("float64"))
    np.testing.assert_allclose(
        np.asarray(scaler.transform(X_test)), reference.transform(X_test), **tolerance("float64")
    )
    np.testing.assert_allclose(
        np.asarray(scaler.inverse_transform(scaler.transform(X_test))), X_test, **tolerance("float64")
    )


def test_standardizer_errors():
    with pytest.raises(ValueError, match="Standardizer.fit: the dataset is empty"):
        data.Standardizer.fit(np.zeros((0, 3)))
    scaler = data.Standardizer.fit(np.ones((4, 3)))
    with pytest.raises(ValueError, match="X has feature shape \\(2,\\), expected \\(3,\\)"):
        scaler.transform(np.ones((4, 2)))


LOADER_CASES = [(b, d) for b in (1, 3, 4, 10) for d in (False, True)] + [(12, False)]


@pytest.mark.parametrize(
    ("batch_size", "drop_last"), LOADER_CASES, ids=[f"bs{b}-{'drop' if d else 'keep'}" for b, d in LOADER_CASES]
)
def test_sequential_loader_matches_torch(batch_size, drop_last):
    n = 10
    X = np.arange(2.0 * n).reshape(n, 2)
    Y = np.arange(float(n))
    reference = TorchDataLoader(
        TensorDataset(torch.tensor(X), torch.tensor(Y)), batch_size=batch_size, shuffle=False, drop_last=drop_last
    )
    loader = data.DataLoader(X, Y, batch_size=batch_size, drop_last=drop_last)
    assert len(loader) == len(reference)
    ours = list(loader)
    theirs = list(reference)
    assert len(ours) == len(theirs)
    for (xb, yb), (tx, ty) in zip(ours, theirs):
        np.testing.assert_array_equal(np.asarray(xb), tx.numpy())
        np.testing.assert_array_equal(np.asarray(yb), ty.numpy())


def test_shuffling_loader_is_keyed_per_epoch_and_replayable():
    X = np.arange(13.0)
    loader = data.DataLoader(X, batch_size=4, shuffle=True, key=jax.random.key(7))
    assert len(loader) == 4
    first = np.concatenate([np.asarray(b[0]) for b in loader])
    second = np.concatenate([np.asarray(b[0]) for b in loader])
    assert sorted(first.tolist()) == list(range(13)) and not np.array_equal(first, second)
    replay = np.concatenate([np.asarray(b[0]) for b in loader.epoch(1)])
    np.testing.assert_array_equal(replay, second)
    expected_order = np.asarray(data.epoch_permutation(jax.random.key(7), 13, 0))
    np.testing.assert_array_equal(first, expected_order)


@pytest.mark.parametrize("drop_last", [False, True], ids=["keep-last", "drop-last"])
def test_epoch_batches_are_the_iterator_batches(drop_last):
    X = jnp.arange(22.0).reshape(11, 2)
    Y = jnp.arange(11)
    key = jax.random.key(2)
    order = data.epoch_permutation(key, 11, 5)
    (xs, ys), remainder = jax.jit(lambda X, Y, order: data.epoch_batches((X, Y), order, 3, drop_last=drop_last))(
        X, Y, order
    )
    assert xs.shape == (3, 3, 2) and ys.shape == (3, 3)
    batches = data.batch_indices(11, 3, shuffle=True, drop_last=drop_last, key=key, epoch=5)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(xs[i]), np.asarray(X)[batches[i]])
    if drop_last:
        assert remainder is None and len(batches) == 3
    else:
        np.testing.assert_array_equal(np.asarray(remainder[1]), np.asarray(Y)[batches[3]])


@pytest.mark.parametrize(
    ("kwargs", "arrays", "error", "match"),
    [
        ({"batch_size": 0}, (np.zeros(5),), ValueError, "batch_size must be a positive integer, got batch_size=0"),
        ({"batch_size": -2}, (np.zeros(5),), ValueError, "batch_size must be a positive integer"),
        (
            {"batch_size": 6, "drop_last": True},
            (np.zeros(5),),
            ValueError,
            "batch_size=6 is larger than the dataset \\(5 samples\\) with drop_last=True",
        ),
        ({"batch_size": 2, "shuffle": True}, (np.zeros(5),), ValueError, "shuffle=True needs key"),
        ({"batch_size": 2}, (np.zeros(5), np.zeros(4)), ValueError, "same number of samples"),
        ({"batch_size": 2}, (np.zeros((0, 3)),), ValueError, "the dataset is empty"),
        ({"batch_size": 2}, (), ValueError, "expected at least one array"),
        ({"batch_size": 2}, (np.float32(1.0),), ValueError, "leading sample axis"),
        ({"batch_size": 2, "shuffle": True, "key": 3}, (np.zeros(5),), TypeError, "key must be a jax.random key"),
    ],
    ids=[
        "bs0",
        "bs-negative",
        "bs-too-large-drop-last",
        "shuffle-no-key",
        "mismatch",
        "empty",
        "no-arrays",
        "scalar",
        "bad-key",
    ],
)
def test_loader_errors(kwargs, arrays, error, match):
    with pytest.raises(error, match=match):
        data.DataLoader(*arrays, **kwargs)


def test_batch_indices_errors():
    with pytest.raises(ValueError, match="shuffle=True needs key"):
        data.batch_indices(5, 2, shuffle=True)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        data.batch_indices(0, 2)
