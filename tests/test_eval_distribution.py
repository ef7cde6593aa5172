"""FID, KID and k-NN precision/recall against answers computed another way: closed forms for
Gaussians, a direct loop over pairs, moments of known distributions, point clouds whose
overlap is known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from i2i.eval.distribution import (
    TooFewError,
    fid,
    frechet_distance,
    kid,
    precision_recall,
    radii,
)


def test_frechet_distance_of_diagonal_covariances_is_the_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    # |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2 = (1 + 0 + 6.25) + (4 + 1 + 0)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(12.25, rel=1e-12)


def test_frechet_distance_of_non_commuting_2x2_covariances():
    s1 = np.array([[2.0, 0.6], [0.6, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    # For a 2x2 matrix M with positive eigenvalues, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)).
    product = s1 @ s2
    trace_root = math.sqrt(np.trace(product) + 2 * math.sqrt(np.linalg.det(product)))
    expected = 0.5 ** 2 + np.trace(s1) + np.trace(s2) - 2 * trace_root
    got = frechet_distance(np.zeros(2), s1, np.array([0.5, 0.0]), s2)
    assert got == pytest.approx(expected, rel=1e-12)


def test_fid_does_not_change_when_both_sets_are_rotated():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * np.arange(1, 7)
    y = rng.normal(size=(150, 6)) + 0.3
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert fid(x @ rotation, y @ rotation) == pytest.approx(fid(x, y), rel=1e-9)
    assert fid(x, y) > 1.0


@pytest.mark.parametrize("n, d", [(300, 8), (10, 64)])     # the second: singular covariances
def test_fid_of_a_set_with_itself_is_zero_within_rounding(n, d):
    x = np.random.default_rng(1).normal(size=(n, d)) * 5 + 2
    scale = np.trace(np.cov(x, rowvar=False))
    assert abs(fid(x, x)) < 1e-9 * scale


def _kid_by_loop(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 with k = (a.b / d + 1)^3, one pair at a time."""
    d, m, n = x.shape[1], len(x), len(y)
    k = lambda a, b: (float(np.dot(a, b)) / d + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_on_one_subset_of_everything_equals_the_direct_loop():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) * 1.5 + 0.2
    mean, std, size = kid(x, y, subsets=1, subset_size=30)
    assert size == 30 and std == 0.0
    assert mean == pytest.approx(_kid_by_loop(x, y), rel=1e-10)


def test_kid_of_shifted_uniform_distributions_matches_their_moments():
    # d = 1: k(x, y) = (xy + 1)^3 = x^3 y^3 + 3 x^2 y^2 + 3 xy + 1, so MMD^2 is
    # sum_j c_j (E x^j - E y^j)^2 with c = (3, 3, 1). x ~ U(-1, 1): moments 0, 1/3, 0;
    # y = x + mu: mu, 1/3 + mu^2, mu + mu^3.
    mu = 0.5
    expected = 3 * mu ** 2 + 3 * mu ** 4 + (mu + mu ** 3) ** 2                 # 1.328125
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(20000, 1))
    y = rng.uniform(-1, 1, size=(20000, 1)) + mu
    mean, _, _ = kid(x, y, subsets=100, subset_size=1000)
    # Noise: the samples' moments (about 0.02) and 100 subsets of 1000 (each with a standard
    # deviation near 0.14, so 0.014 for the mean): 0.1 is about four standard errors. A wrong
    # kernel is further off: without the + 1 the answer is 0.39, squared instead of cubed 0.56.
    assert mean == pytest.approx(expected, abs=0.1)


def test_kid_of_one_distribution_is_near_zero_and_not_biased_upwards():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4))
    mean, std, _ = kid(x, y, subsets=50, subset_size=500)
    # The biased estimate (diagonals kept) would add (E k(x, x) - E k(x, x')) / m per set,
    # (11.5 - 1.75) / 500 each, about 0.04 in all.
    assert abs(mean) < 0.01 and std > 0


def test_precision_and_recall_of_clouds_with_known_overlap():
    rng = np.random.default_rng(5)
    shared = rng.normal(size=(30, 4))                        # in both sets
    only_target = rng.normal(size=(10, 4)) + 100.0           # far from everything generated
    only_generated = rng.normal(size=(20, 4)) - 100.0        # far from everything targeted
    target = np.concatenate([shared, only_target])
    generated = np.concatenate([shared, only_generated])
    precision, recall = precision_recall(generated, target, k=3)
    assert precision == pytest.approx(30 / 50, abs=1e-12)
    assert recall == pytest.approx(30 / 40, abs=1e-12)


def test_a_point_is_inside_when_within_the_kth_neighbour_radius():
    target = np.array([[0.0], [1.0], [2.0], [3.0]])
    # k = 3: the ends' radius is 3 (their 3rd neighbour is the other end), the middles' 2.
    assert radii(target, 3).tolist() == [3.0, 2.0, 2.0, 3.0]
    generated = np.array([[5.9], [-2.9], [6.1], [-3.1], [1.5]])
    precision, _ = precision_recall(generated, target, k=3)
    assert precision == pytest.approx(3 / 5)                # 5.9, -2.9 and 1.5 are inside


@pytest.mark.parametrize("call, message", [
    (lambda x: fid(x[:1], x), "FID: each set needs at least 2 pictures; the generated set "
                              "has 1"),
    (lambda x: kid(x, x[:1]), "KID: each set needs at least 2 pictures; the target set has 1"),
    (lambda x: precision_recall(x[:3], x), "precision and recall (k = 3): each set needs at "
                                           "least 4 pictures; the generated set has 3"),
    (lambda x: kid(x, x, subsets=0), "KID needs at least 1 subset of at least 2 pictures"),
    (lambda x: precision_recall(x, x, k=0), "k must be at least 1"),
])
def test_too_few_pictures_are_refused_saying_how_many(call, message):
    x = np.random.default_rng(6).normal(size=(8, 3))
    with pytest.raises(ValueError) as err:
        call(x)
    assert message in str(err.value)
    assert isinstance(err.value, TooFewError) == ("each set needs" in message)
