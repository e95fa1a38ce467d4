"""Metrics against independent computations and known answers."""

import jax
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm, wasserstein_distance

from toy import evaluation as E
from toy import metrics as M
from toy.errors import ToyError
from toy.presets import get_preset

rng = np.random.default_rng(0)


@pytest.fixture(scope="module")
def g1():
    return get_preset("gmm1d").cond(0)


@pytest.fixture(scope="module")
def g2():
    return get_preset("gmm2d").cond(0)


def exact(m, n, seed):
    return np.asarray(m.sample(jax.random.key(seed), n))


def test_wasserstein_1d_matches_scipy():
    a, b = rng.normal(size=700), rng.gamma(2.0, size=1100)
    assert M.wasserstein(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-9)
    assert M.wasserstein(a, a + 1.5, p=2) == pytest.approx(1.5, rel=1e-9)        # a translation moves by |c|


def test_sliced_wasserstein_of_a_translation():
    x = rng.normal(size=(3000, 2))
    c = np.array([3.0, 4.0])
    # W1 along u is |u·c|; its mean over uniform directions in 2D is (2/π)|c|
    assert M.wasserstein(x, x + c, num_projections=2000) == pytest.approx(2 / np.pi * 5, rel=0.03)


def test_mmd_is_unbiased_u_statistic():
    x, y = rng.normal(size=(60, 2)), rng.normal(size=(50, 2)) + 0.5
    base = np.sqrt(np.mean(np.var(y, axis=0)))
    by_hand = 0.0
    for s in (0.1, 0.3, 1.0, 3.0):
        k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * (s * base) ** 2))
        kxx = np.mean([k(x[i], x[j]) for i in range(60) for j in range(60) if i != j])
        kyy = np.mean([k(y[i], y[j]) for i in range(50) for j in range(50) if i != j])
        kxy = np.mean([k(a, b) for a in x for b in y])
        by_hand += kxx + kyy - 2 * kxy
    assert M.mmd(x, y) == pytest.approx(by_hand, rel=1e-4)
    same = M.mmd(rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2)))
    assert abs(same) < 0.01 < M.mmd(rng.normal(size=(1000, 2)) + 0.5, rng.normal(size=(1000, 2)))


def test_exact_samples_score_like_the_truth(g1, g2):
    for m in (g1, g2):
        x = exact(m, 5000, 1)
        r = E.score(x, E.make_reference(m, seed=2, n=20000))
        assert r["mode_coverage"] == 1.0
        assert r["mode_shift"] < 0.08
        assert r["spread_ratio"] == pytest.approx(1.0, abs=0.04)
        assert r["low_density_frac"] == pytest.approx(0.01, abs=0.006)


def test_mode_metrics_see_a_distortion(g1):
    ref = exact(g1, 20000, 3)
    x = exact(g1, 5000, 4)
    # push each mode outward by 0.5 and shrink it to half its width
    centre = np.where(x > 0, 4.0, -4.0)
    y = centre + np.sign(centre) * 0.5 + 0.5 * (x - centre)
    assert M.mode_shift(y, g1, ref) == pytest.approx(0.5, abs=0.06)
    assert M.spread_ratio(y, g1, ref) == pytest.approx(0.5, abs=0.05)
    # only one of the two modes: half the mass covered
    assert M.mode_coverage(x[x[:, 0] > 0], g1) == pytest.approx(0.5)
    # samples all between the modes sit in low density
    assert M.low_density_frac(np.zeros((100, 1)), g1, ref) == 1.0


def test_gt_logp_matches_scipy(g1):
    x = rng.normal(scale=5, size=(200, 1))
    logj = np.stack([np.log(w) + norm(mu[0], np.sqrt(c[0, 0])).logpdf(x[:, 0])
                     for w, mu, c in zip(g1.weights, g1.means, g1.covs)], 1)
    assert M.gt_logp(x, g1) == pytest.approx(np.mean(logsumexp(logj, axis=1)), rel=1e-5)


def test_bad_inputs(g1):
    with pytest.raises(ToyError, match="NaN"):
        M.gt_logp(np.array([[0.0], [np.nan]]), g1)
    with pytest.raises(ToyError, match="shape"):
        M.wasserstein(np.zeros((2, 2, 2)), np.zeros((3, 2)))


def test_mode_balance_noise_floor_and_one_mode():
    four = get_preset("gmm2d4").cond(0)                    # four equal modes at (±4, ±4)
    tree = get_preset("tree2d").cond(0)                    # many overlapping, unequal thin components
    for m, n in ((four, 4000), (tree, 4000)):
        w = np.asarray(m.weights)
        r = M.responsibilities(exact(m, n, 5), m)
        np.testing.assert_allclose(r.sum(1), 1.0, atol=1e-12)
        # the most responsible component is the hard assignment the other per-mode metrics use
        np.testing.assert_array_equal(r.argmax(1), M.assign(exact(m, n, 5), m))
        # exact samples: each share is a mean of n responsibilities with variance ≤ w(1 − w)/n, so the
        # TV distance stays within a few standard errors of 0 (responsibility weighting has no bias,
        # even where components overlap)
        floor = 0.5 * np.sum(np.sqrt(w * (1 - w) / n))
        vals = [M.mode_balance(exact(m, n, s), m) for s in range(5)]
        assert max(vals) < 3 * floor, (vals, floor)
    # everything in one mode: the share is (1, 0, 0, 0) against (¼, ¼, ¼, ¼): TV = ¾
    x = exact(four, 4000, 6)
    one = x[(x[:, 0] > 0) & (x[:, 1] > 0)]
    assert M.mode_balance(one, four) == pytest.approx(0.75, abs=1e-3)
    # two modes at half weight each: TV = ½
    two = x[x[:, 0] > 0]
    assert M.mode_balance(two, four) == pytest.approx(0.5, abs=0.03)
    # scored through the evaluation the same way
    assert E.score(one, E.make_reference(four, 0, 500), metrics=["mode_balance"])["mode_balance"] == \
        M.mode_balance(one, four)
