"""One scoring procedure: `toy.evaluation` equals the metrics computed one by one, and every caller
(compare, the figures, the app) gets the same numbers for the same seed and settings."""

import dataclasses

import jax
import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from toy import evaluation as E
from toy import metrics as M
from toy.compare import CompareConfig, run_compare
from toy.diffusion import SamplerConfig
from toy.guidance import GuidanceConfig
from toy.presets import get_preset


@pytest.mark.parametrize("preset", ["gmm1d", "gmm2d"])
def test_score_equals_each_metric_from_scratch(preset):
    target = get_preset(preset).cond(0)
    x = np.asarray(target.sample(jax.random.key(9), 700)) * 1.1 + 0.2                # a distorted sample set
    ref = E.make_reference(target, seed=4, n=700)
    s, r = E.DEFAULT, ref.x
    assert r.shape[0] == E.reference_size(700) == 5000                              # max(n, reference_min)
    got = E.score(x, ref)
    assert set(got) == set(M.METRICS)
    want = {"wasserstein": M.wasserstein(x, r, num_projections=s.num_projections, seed=4),
            "mmd": M.mmd(x, r, max_points=s.mmd_points, seed=4),
            "mode_coverage": M.mode_coverage(x, target, min_share=s.min_share),
            "mode_balance": M.mode_balance(x, target),
            "mode_shift": M.mode_shift(x, target, r, min_count=s.min_count),
            "spread_ratio": M.spread_ratio(x, target, r, min_count=s.min_count),
            "gt_logp": M.gt_logp(x, target),
            "low_density_frac": M.low_density_frac(x, target, r)}
    for k in M.METRICS:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k
    if preset == "gmm1d":                          # 1D W1 is exact: an independent implementation agrees
        assert got["wasserstein"] == pytest.approx(wasserstein_distance(x[:, 0], r[:, 0]), rel=1e-9)


def test_score_of_some_metrics_is_the_full_score_restricted():
    """Asking for fewer metrics computes only those and changes none of their values; the names are
    checked, and the order is METRICS' whatever the order asked."""
    from toy.errors import ToyError
    target = get_preset("gmm2d").cond(1)
    x = np.asarray(target.sample(jax.random.key(3), 400)) * 0.9
    ref = E.make_reference(target, seed=2, n=400)
    full = E.score(x, ref)
    for names in (("spread_ratio", "mmd"), ("low_density_frac",), ("wasserstein", "mode_coverage", "gt_logp")):
        got = E.score(x, ref, names)
        assert list(got) == [k for k in M.METRICS if k in names]
        assert got == {k: full[k] for k in names}
    assert E.score(x, ref, ()) == {}
    with pytest.raises(ToyError, match="unknown metric.*W1.*choose from wasserstein, mmd"):
        E.score(x, ref, ("W1",))


def test_runs_score_each_metric_when_first_asked_and_keep_it(monkeypatch):
    """A run scored for one metric, then asked for all, is not sampled again and has exactly the
    scores of a fresh run scored at once; each metric is computed once per run."""
    from toy.nets import ExactDenoiser
    mix = get_preset("gmm2d")
    exact, target, scfg = ExactDenoiser(mix), mix.cond(0), SamplerConfig(steps=6)
    g = GuidanceConfig(method="cfg", scale=2.0)
    runs = E.Runs()
    ref = runs.reference(target, 5, 300)
    asked = []
    score = E.score
    monkeypatch.setattr(E, "score", lambda x, r, metrics=None: asked.append(tuple(E.metric_names(metrics))) or score(x, r, metrics))
    x, met, _ = runs.sample_and_score(exact, g, scfg, ref, 0, 300, metrics=("wasserstein",))
    assert list(met) == ["wasserstein"]
    x2, met2, _ = runs.sample_and_score(exact, g, scfg, ref, 0, 300)
    x3, met3, _ = runs.sample_and_score(exact, g, scfg, ref, 0, 300, metrics=("mmd", "wasserstein"))
    assert x2 is x and x3 is x and len(runs) == 1
    assert asked == [("wasserstein",), tuple(k for k in M.METRICS if k != "wasserstein")]
    monkeypatch.setattr(E, "score", score)
    _, fresh, _ = E.sample_and_score(exact, g, scfg, E.make_reference(target, 5, 300), 0, 300)
    assert met2 == fresh and met["wasserstein"] == fresh["wasserstein"]
    assert met3 == {"wasserstein": fresh["wasserstein"], "mmd": fresh["mmd"]}


def test_keys_and_summary():
    target = get_preset("gmm1d").cond(0)
    a, b = E.truth_samples(target, 3, 50), E.truth_samples(target, 3, 50)
    np.testing.assert_array_equal(a, b)                                              # same seed, same numbers
    ref = E.make_reference(target, 3, 50)
    assert not np.allclose(ref.x[:50], a)                                            # one purpose, one key
    assert E.summarize([1.0, 2.0, 4.0]) == {"mean": pytest.approx(7 / 3), "std": pytest.approx(np.std([1, 2, 4], ddof=1))}
    assert E.summarize([5.0]) == {"mean": 5.0, "std": 0.0}
    assert E.summarize([float("nan"), None]) == {"mean": None, "std": None}


def test_compare_and_figures_measure_the_same(trained):
    """One setting, two callers: the W1 in `compare`'s JSON and in a figure's Lab run are one number."""
    from toy.figures import Lab, Settings
    trained("gmm1d")
    cfg = CompareConfig(preset="gmm1d", methods=("cfg",), guidance=GuidanceConfig(scale=3.0), seeds=(0,),
                        samples=400, quick=True, sampler=SamplerConfig())
    res = run_compare(cfg, progress=False)
    st = dataclasses.replace(Settings.make(quick=True), samples=400, seeds=(0,), steps=32)
    _, met, _ = Lab(st).run("gmm1d", GuidanceConfig(method="cfg", scale=3.0), 0)
    for k in M.METRICS:
        assert res["methods"]["cfg"][k]["mean"] == pytest.approx(met[k], rel=1e-12), k


def test_runs_reuse_exactly_what_a_new_run_gives_and_nothing_else():
    """`Runs` (the figures' memo): a repeated run is the stored one and equals a fresh computation; a
    setting the method reads makes another run, one it does not read does not; asking for trajectories
    of a run made without them makes it again, with the same samples."""
    from toy.nets import ExactDenoiser
    mix = get_preset("gmm1d")
    exact, target, scfg = ExactDenoiser(mix), mix.cond(0), SamplerConfig(steps=8)
    runs = E.Runs()
    ref = runs.reference(target, 1, 300)
    assert runs.reference(target, 1, 300) is ref and runs.reference(target, 2, 300) is not ref
    g = GuidanceConfig(method="cfg", scale=3.0)
    x, met, res = runs.sample_and_score(exact, g, scfg, ref, 0, 300)
    assert res.trajectory is None and len(runs) == 1
    x2, met2, _ = runs.sample_and_score(exact, dataclasses.replace(g, s2_scale=1.7, num_masks=9), scfg, ref, 0, 300)
    assert x2 is x and met2 == met and len(runs) == 1                  # CFG reads neither ω nor N
    fresh_x, fresh_met, _ = E.sample_and_score(exact, g, scfg, E.make_reference(target, 1, 300), 0, 300)
    np.testing.assert_array_equal(x, fresh_x)
    assert fresh_met == met
    x3, _, _ = runs.sample_and_score(exact, dataclasses.replace(g, scale=2.0), scfg, ref, 0, 300)
    assert len(runs) == 2 and not np.array_equal(x3, x)                # λ is read: another run
    runs.sample_and_score(ExactDenoiser(mix), g, scfg, ref, 0, 300)    # another denoiser object: another run
    assert len(runs) == 3
    xt, _, rt = runs.sample_and_score(exact, g, scfg, ref, 0, 300, return_trajectory=True)
    assert rt.trajectory.shape == (9, 300, 1) and len(runs) == 3
    np.testing.assert_array_equal(xt, x)
    assert runs.sample_and_score(exact, g, scfg, ref, 0, 300)[2] is rt  # the run with trajectories serves both


def test_draw_is_the_sampling_half_of_sample_and_score():
    from toy.nets import ExactDenoiser
    mix = get_preset("gmm1d")
    exact, g, scfg = ExactDenoiser(mix), GuidanceConfig(method="cfg", scale=2.5), SamplerConfig(steps=8)
    ref = E.make_reference(mix.cond(1), 4, 200)
    x, met, res = E.sample_and_score(exact, g, scfg, ref, 1, 200)
    d = E.draw(exact, g, scfg, 4, 1, 200)
    np.testing.assert_array_equal(np.asarray(d.x), x)
    assert E.score(np.asarray(d.x), ref) == met
    np.testing.assert_array_equal(res.sigmas, scfg.sigmas(exact.sigma_data))       # the schedule, without sampling
