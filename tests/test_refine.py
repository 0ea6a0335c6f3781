"""Hopcroft-style lumping (``marl_kstep._refine``) against a brute-force signature refinement."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from helpers import split_dense

from marl_kstep._refine import check_stable, refine_lumping

DYADIC = (0.5, 0.25, 0.125, 0.375, 0.0625, 0.75)
ROW_TEMPLATES = ((1.0,), (0.5, 0.5), (0.5, 0.25, 0.25), (0.25, 0.25, 0.25, 0.25), (0.125, 0.5, 0.375))


# --------------------------------------------------------------------------- model builders


def dense_to_csr(P):
    """CSR arrays of a dense (N, J, N) transition array (rows s * J + j)."""
    N, J, _ = P.shape
    flat = P.reshape(N * J, N)
    row, col = np.nonzero(flat)  # row-major: sorted by row, then column
    indptr = np.zeros(N * J + 1, np.int64)
    np.cumsum(np.bincount(row, minlength=N * J), out=indptr[1:])
    return indptr, col.astype(np.int64), flat[row, col].astype(np.float64), N, J


def first_occurrence(keys):
    ids = {}
    return np.array([ids.setdefault(k, len(ids)) for k in keys], np.int64)


def naive_refinement(P, init):
    """Coarsest stable refinement by repeated full signatures (label, per j: sorted (block, sum))."""
    N, J, _ = P.shape
    label = first_occurrence(init.tolist())
    while True:
        sigs = []
        for s in range(N):
            per_j = []
            for j in range(J):
                acc = {}
                for t in np.flatnonzero(P[s, j]):
                    acc.setdefault(int(label[t]), []).append(float(P[s, j, t]))
                per_j.append(tuple(sorted((b, sum(sorted(v))) for b, v in acc.items())))
            sigs.append((int(label[s]), tuple(per_j)))
        new = first_occurrence(sigs)
        if new.max() == label.max():
            return new
        label = new


def random_row(rng, N, P_row, probs=None):
    k = int(rng.integers(0, 5)) if probs is None else len(probs)
    if probs is None:
        if k == 0 and rng.random() < 0.7:
            k = 1
        if rng.random() < 0.6:
            tpl = [t for t in ROW_TEMPLATES if len(t) <= N]
            probs = tpl[int(rng.integers(len(tpl)))]
        else:
            probs = rng.choice(DYADIC, size=min(k, N))
    targets = rng.choice(N, size=len(probs), replace=False)
    P_row[:] = 0.0
    P_row[targets] = probs


def random_model(rng, max_states=30, max_joint=4):
    """Random sparse dyadic model, or a random realisation of a random quotient (lumpable by
    construction), possibly perturbed; init labels with few classes."""
    N = int(rng.integers(1, max_states + 1))
    J = int(rng.integers(1, max_joint + 1))
    P = np.zeros((N, J, N))
    if rng.random() < 0.35:
        for s in range(N):
            for j in range(J):
                random_row(rng, N, P[s, j])
        init = rng.integers(0, int(rng.integers(1, 4)), size=N)
        return P, init
    K = int(rng.integers(1, min(N, 8) + 1))
    f = np.concatenate([np.arange(K), rng.integers(0, K, size=N - K)])
    rng.shuffle(f)
    members = [np.flatnonzero(f == b) for b in range(K)]
    for b in range(K):
        for j in range(J):
            n_targets = int(rng.integers(0, min(K, 3) + 1))
            targets = rng.choice(K, size=n_targets, replace=False)
            masses = rng.choice(DYADIC, size=n_targets)
            for s in members[b]:
                for C, q in zip(targets, masses, strict=True):
                    if members[C].size >= 2 and rng.random() < 0.5:
                        t1, t2 = rng.choice(members[C], size=2, replace=False)
                        share = 0.5 if rng.random() < 0.5 else 0.75
                        P[s, j, t1] += q * share
                        P[s, j, t2] += q * (1 - share)
                    else:
                        P[s, j, rng.choice(members[C])] += q
    for _ in range(int(rng.integers(0, 3))):
        random_row(rng, N, P[rng.integers(N), rng.integers(J)])
    init = rng.integers(0, int(rng.integers(1, 4)), size=K)[f]
    return P, init


def split_model(rng, P, max_copies=3):
    """Split every state into 1..max_copies twins (see helpers.split_dense). Returns (split P, twin_of)."""
    Q, twin_of, _ = split_dense(rng, P, max_copies)
    return Q, twin_of


def chain(L):
    """Aggregated chain: J = 2, L moves to max(s-1, 0), R to min(s+1, L-1); states 0 and L-1
    have their own initial labels."""
    s = np.arange(L)
    indices = np.stack([np.maximum(s - 1, 0), np.minimum(s + 1, L - 1)], axis=1).ravel().astype(np.int64)
    indptr = np.arange(2 * L + 1, dtype=np.int64)
    init = np.zeros(L, np.int64)
    init[0] = 1
    init[L - 1] = 2
    return (indptr, indices, np.ones(2 * L), L, 2), init


def number_matching(n, m, move_cost=0.3):
    """n agents with numbers in 0..m-1, each keeps or increments mod m (J = 2**n), deterministic;
    init label = (match observation of every agent, reward row)."""
    X = np.array(list(itertools.product(range(m), repeat=n)), np.int64)  # (N, n), lexicographic
    A = np.array(list(itertools.product(range(2), repeat=n)), np.int64)  # (J, n)
    N, J = X.shape[0], A.shape[0]
    weights = m ** np.arange(n - 1, -1, -1)
    nxt = ((X[:, None, :] + A[None, :, :]) % m) @ weights  # (N, J)
    indptr = np.arange(N * J + 1, dtype=np.int64)
    obs = (X == np.roll(X, -1, axis=1)).astype(np.int64)  # obs_i = [x_i == x_{(i+1) % n}]
    alleq = (X == X[:, :1]).all(axis=1).astype(float)
    rewards = alleq[:, None] - move_cost * A.sum(axis=1)[None, :]
    key = np.concatenate([obs, rewards.view(np.int64)], axis=1)
    init = np.unique(key, axis=0, return_inverse=True)[1].ravel()
    return (indptr, nxt.ravel().astype(np.int64), np.ones(N * J), N, J), init


def same_partition(a, b):
    a, b = np.asarray(a), np.asarray(b)
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def refines(fine, coarse):
    return len(set(zip(fine.tolist(), coarse.tolist(), strict=True))) == len(set(fine.tolist()))


# --------------------------------------------------------------------------- tests


def test_matches_naive_refinement_on_random_models():
    rng = np.random.default_rng(12345)
    n_lumped = 0
    for _ in range(400):
        P, init = random_model(rng)
        model = dense_to_csr(P)
        got = refine_lumping(*model, init)
        expected = naive_refinement(P, init)
        assert same_partition(got, expected)
        np.testing.assert_array_equal(got, expected)  # same first-occurrence numbering
        assert got.dtype == np.int64
        assert check_stable(*model, got) == 0.0
        n_lumped += got.max() + 1 < P.shape[0]
    assert n_lumped > 100  # the generator does produce genuinely lumpable models


def test_split_twins_lump_back_to_the_base_model():
    rng = np.random.default_rng(777)
    for _ in range(150):
        P, init = random_model(rng, max_states=12, max_joint=3)
        Q, twin_of = split_model(rng, P)
        base = refine_lumping(*dense_to_csr(P), init)
        got = refine_lumping(*dense_to_csr(Q), init[twin_of])
        assert got.max() == base.max()  # as many blocks as the lumped base model
        np.testing.assert_array_equal(got, base[twin_of])
        np.testing.assert_array_equal(got, naive_refinement(Q, init[twin_of]))
        assert check_stable(*dense_to_csr(Q), got) == 0.0


def test_twins_of_an_unlumpable_model_lump_back_to_its_size():
    rng = np.random.default_rng(5)
    model, init = chain(7)
    P = np.zeros((7, 2, 7))
    P[np.repeat(np.arange(7), 2), np.tile(np.arange(2), 7), model[1]] = 1.0
    for _ in range(10):
        Q, twin_of = split_model(rng, P)
        got = refine_lumping(*dense_to_csr(Q), init[twin_of])
        np.testing.assert_array_equal(got, twin_of)


def test_inexact_probabilities_give_a_stable_refinement():
    rng = np.random.default_rng(99)
    for _ in range(100):
        P, init = random_model(rng, max_states=20, max_joint=3)
        # non-dyadic probabilities: every row rescaled by a random factor (exact twins kept)
        P = P * rng.choice([1 / 3, 0.1, 0.7, 1.0], size=P.shape[:2])[:, :, None]
        model = dense_to_csr(P)
        got = refine_lumping(*model, init)
        assert refines(got, init)
        assert check_stable(*model, got, 1e-12) <= 1e-12


def test_aggregated_chain_is_not_lumpable_and_fast():
    model, init = chain(50)
    np.testing.assert_array_equal(refine_lumping(*model, init), np.arange(50))  # compiles
    for L in (4000, 8000):
        model, init = chain(L)
        t0 = time.perf_counter()
        labels = refine_lumping(*model, init)
        dt = time.perf_counter() - t0
        print(f"aggregated chain L={L}: {dt * 1e3:.1f} ms, {labels.max() + 1} blocks")
        np.testing.assert_array_equal(labels, np.arange(L))
        assert check_stable(*model, labels) == 0.0
        assert dt < 5.0  # generous; typically a few milliseconds


@pytest.mark.parametrize(("n", "m", "blocks"), [(3, 6, 36), (2, 6, 6)])
def test_number_matching(n, m, blocks):
    model, init = number_matching(n, m)
    labels = refine_lumping(*model, init)
    assert labels.max() + 1 == blocks
    assert refines(labels, init)
    assert check_stable(*model, labels) == 0.0
    # the same states are lumped together whatever the state numbering
    perm = np.random.default_rng(0).permutation(model[3])
    inv = np.argsort(perm)
    N, J = model[3], model[4]
    indices = inv[model[1].reshape(N, J)[perm]].ravel()
    relabelled = refine_lumping(model[0], indices, model[2], N, J, init[perm])
    assert same_partition(relabelled, labels[perm])


def test_check_stable_detects_a_wrong_partition():
    model, init = chain(10)
    labels = np.arange(10)
    assert check_stable(*model, labels) == 0.0
    labels[2] = 1  # states 1 and 2: L leads into {0} from 1 only
    assert check_stable(*model, labels) == 1.0
    assert check_stable(*model, labels, 1e-12) > 1e-12
    model, init = number_matching(3, 6)
    labels = refine_lumping(*model, init)
    # merging two blocks (observations ignored): deterministic moves, so deviations are 0 or 1
    devs = {check_stable(*model, np.where(labels == b + 1, b, labels)) for b in range(labels.max())}
    assert 1.0 in devs and devs <= {0.0, 1.0}
    # a small deviation is measured exactly
    indptr = np.array([0, 2, 4, 4, 4], np.int64)
    indices = np.array([2, 3, 2, 3], np.int64)
    probs = np.array([0.5, 0.5, 0.5 + 1e-9, 0.5 - 1e-9])
    dev = check_stable(indptr, indices, probs, 4, 1, np.array([0, 0, 1, 2]))
    assert dev == pytest.approx(1e-9, rel=1e-6)
    # 2 and 3 (no transitions) are lumped; then 0 and 1 both move into {2, 3} with probability 1
    assert refine_lumping(indptr, indices, probs, 4, 1, np.zeros(4, np.int64)).tolist() == [0, 0, 1, 1]
    assert check_stable(indptr, indices, probs, 4, 1, np.array([0, 0, 1, 1])) == 0.0


def test_edge_cases():
    empty = (np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0), 0, 1)
    assert refine_lumping(*empty, np.zeros(0, np.int64)).shape == (0,)
    assert check_stable(*empty, np.zeros(0, np.int64)) == 0.0
    # no transitions at all: the initial partition itself, renumbered by first occurrence
    none = (np.zeros(5 * 2 + 1, np.int64), np.zeros(0, np.int64), np.zeros(0), 5, 2)
    np.testing.assert_array_equal(refine_lumping(*none, np.array([7, 3, 7, -1, 3])), [0, 1, 0, 2, 1])
    with pytest.raises(ValueError):
        refine_lumping(*none, np.zeros(4, np.int64))
    with pytest.raises(ValueError):
        refine_lumping(np.array([0, 1]), np.array([3]), np.array([1.0]), 1, 1, np.zeros(1))
