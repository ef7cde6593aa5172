"""Distances between two sets of features: FID, KID, and k-NN precision and recall.

Each takes (N, D) feature arrays (features.py), generated and target, and is computed in
float64 with numpy (torch for the pairwise distances).

- FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to the two sets,
  |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)). The trace of the square root is taken
  as the sum of the square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2): that matrix is
  symmetric positive semi-definite with the eigenvalues of S1 S2, so a symmetric eigensolver
  gives them real, and rounding's tiny negative ones are clipped to 0. This needs no general
  matrix square root (whose complex parts on near-singular covariances have to be discarded)
  and stays finite when there are fewer pictures than dimensions.
- KID (Binkowski et al. 2018): the unbiased estimate of the squared MMD with the polynomial
  kernel k(x, y) = (x . y / D + 1)^3, on `subsets` random subsets of `subset_size` pictures of
  each set (drawn without replacement, seeded); the mean and the standard deviation over them.
- precision and recall (Kynkaanniemi et al. 2019): each set's manifold is the union of balls
  around its points, each ball's radius the distance to that point's k-th nearest neighbour in
  its own set (k = 3). Precision is the share of generated points inside the target manifold
  (are the generated pictures realistic?), recall the share of target points inside the
  generated manifold (do the generated pictures cover the target's variety?).
"""

from __future__ import annotations

import numpy as np
import torch

K = 3                       # the neighbour that sets a manifold ball's radius
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


class TooFewError(ValueError):
    """A set with too few pictures for a metric."""


def _need(features: np.ndarray, least: int, metric: str, which: str) -> None:
    if len(features) < least:
        raise TooFewError(f"{metric}: each set needs at least {least} pictures; the {which} "
                          f"set has {len(features)}: give more pictures")


def mean_cov(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D,) mean and (D, D) covariance (N - 1 in the denominator) of (N, D) features."""
    x = np.asarray(features, dtype=np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    root = _sqrt_psd(np.asarray(sigma1, dtype=np.float64))
    middle = root @ np.asarray(sigma2, dtype=np.float64) @ root     # (D, D), symmetric PSD
    values = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = np.sqrt(np.clip(values, 0, None)).sum()            # tr((S1 S2)^(1/2))
    diff = np.asarray(mu1, dtype=np.float64) - np.asarray(mu2, dtype=np.float64)
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root
    return float(max(value, 0.0))       # rounding can take a distance of 0 a hair below it


def fid(generated: np.ndarray, target: np.ndarray) -> float:
    """FID between two (N, D) feature sets (at least 2 pictures each)."""
    _need(generated, 2, "FID", "generated")
    _need(target, 2, "FID", "target")
    return frechet_distance(*mean_cov(generated), *mean_cov(target))


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased squared MMD of (m, D) x and (n, D) y with k = (x . y / D + 1)^3: the means
    of k over distinct pairs within x and within y, minus twice its mean across."""
    d = x.shape[1]
    m, n = len(x), len(y)
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def kid(generated: np.ndarray, target: np.ndarray, subsets: int = KID_SUBSETS,
        subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float, int]:
    """(mean, standard deviation, subset size used) of the squared MMD over `subsets` random
    subsets; the subset size is at most the smaller set's."""
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"KID needs at least 1 subset of at least 2 pictures; got {subsets} "
                         f"subsets of {subset_size}")
    _need(generated, 2, "KID", "generated")
    _need(target, 2, "KID", "target")
    x = np.asarray(generated, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    m = min(subset_size, len(x), len(y))
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2(x[rng.choice(len(x), m, replace=False)],
                              y[rng.choice(len(y), m, replace=False)]) for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values)), m


def _blocks(a: np.ndarray, b: np.ndarray, rows: int = 1024):
    """(rows of a, Euclidean distances (rows, len(b))) in float64, a block of rows at a time:
    never the whole (len(a), len(b)) matrix at once."""
    ta = torch.as_tensor(np.asarray(a, dtype=np.float64))
    tb = torch.as_tensor(np.asarray(b, dtype=np.float64))
    for i in range(0, len(ta), rows):
        yield torch.cdist(ta[i:i + rows], tb)


def radii(points: np.ndarray, k: int = K) -> torch.Tensor:
    """(N,) the distance from each point to its k-th nearest neighbour among the others."""
    # Each row holds the point's distance to itself (0) too: the k-th neighbour is the
    # (k + 1)-th smallest.
    return torch.cat([d.kthvalue(k + 1, dim=1).values for d in _blocks(points, points)])


def inside(points: np.ndarray, manifold: np.ndarray, k: int = K) -> float:
    """The share of `points` within the k-th neighbour radius of some point of `manifold`."""
    ball = radii(manifold, k)                                   # (M,)
    hits = torch.cat([(d <= ball[None, :]).any(dim=1) for d in _blocks(points, manifold)])
    return float(hits.double().mean())


def precision_recall(generated: np.ndarray, target: np.ndarray, k: int = K
                     ) -> tuple[float, float]:
    """(precision, recall) of the k-NN manifolds (more than k pictures in each set)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    _need(generated, k + 1, f"precision and recall (k = {k})", "generated")
    _need(target, k + 1, f"precision and recall (k = {k})", "target")
    return inside(generated, target, k), inside(target, generated, k)
