"""The claim verdicts, computed from synthetic numbers: each verdict the code can write is reached,
and by the rule the claims file states (differences beyond two combined standard errors)."""

import pytest

from toy import claims as C


def row(mean, std=0.01):
    return {"mean": mean, "std": std}


def results(rows_by_preset):
    return {p: {"methods": {name: {metric: row(*v) for metric, v in metrics.items()} for name, metrics in rows.items()}}
            for p, rows in rows_by_preset.items()}


def shift_results(s2_by_preset, cfg=0.8):
    return results({p: {"s2": {"mode_shift": (s, 0.01)}, "cfg": {"mode_shift": (cfg, 0.01)}} for p, s in s2_by_preset.items()})


PRESETS = ("gmm1d", "gmm2d", "tree2d")


@pytest.mark.parametrize("s2,verdict", [
    ((0.5, 0.5, 0.5), C.HOLDS),                # lower beyond noise everywhere
    ((0.9, 0.95, 0.9), C.WORSE),               # higher beyond noise everywhere: S² is worse than CFG
    ((0.8, 0.801, 0.799), C.DOES_NOT_HOLD),    # within noise everywhere
    ((0.5, 0.9, 0.8), C.MIXED),                # one better, one worse, one tie
    ((0.5, 0.8, 0.8), C.MIXED),                # better on one preset only
])
def test_s2_claim_verdicts(s2, verdict):
    claim, evidence, got = C.s2_corrects_shift(shift_results(dict(zip(PRESETS, s2))), seeds=5)
    assert got == verdict and len(evidence) == 3 and "S²" in claim


def test_s2_claim_states_the_mechanism_in_numbers():
    mech = {"gmm1d": {"alpha": 1.3, "beta": -0.2, "cos_error": -0.1}, "gmm2d": {"alpha": -0.4, "beta": 0.3, "cos_error": 0.5}}
    _, evidence, _ = C.s2_corrects_shift(shift_results(dict(zip(PRESETS, (0.9, 0.9, 0.9)))), 5, mech)
    why = [e for e in evidence if "why" in e]
    assert len(why) == 2 and "α = 1.300" in why[0] and "adds to CFG's push" in why[0] and "opposite of a weak" in why[0]
    assert "takes back part of CFG's push" in why[1] and "as a weak model would" in why[1]


def test_noise_rule_uses_standard_errors():
    # a difference of 0.02 with std 0.02 over 4 seeds: 2·√2·0.01 = 0.028 > 0.02, within noise; over 16 seeds it is beyond
    assert not C.beyond(0.80, 0.02, 0.82, 0.02, seeds=4)
    assert C.beyond(0.80, 0.02, 0.82, 0.02, seeds=16)


def test_cfg_and_autoguidance_verdicts():
    res = results({p: {"cfg[exact]": {"mode_shift": (0.9, 0.01)}, "cfg": {"mode_shift": (0.8, 0.01)},
                       "truth": {"mode_shift": (0.05, 0.01)}} for p in ("gmm1d", "gmm2d")})
    assert C.cfg_shifts_modes(res, 5)[2] == C.HOLDS
    res["gmm2d"]["methods"]["cfg"]["mode_shift"] = row(0.05)
    assert C.cfg_shifts_modes(res, 5)[2] == C.DOES_NOT_HOLD

    def ag(a):
        return results({p: {"autoguidance": {"wasserstein": (a, 0.01)}, "cfg": {"wasserstein": (0.9, 0.01)},
                            "truth": {"wasserstein": (0.1, 0.01)}} for p in PRESETS})
    assert C.autoguidance_helps(ag(0.5), 5)[2] == C.HOLDS           # helps and stays short of the truth
    assert C.autoguidance_helps(ag(0.1), 5)[2] == C.MIXED           # helps, but reaches the noise floor
    assert C.autoguidance_helps(ag(0.9), 5)[2] == C.MIXED           # short of the truth, no help
    assert C.autoguidance_helps(ag(0.95), 5)[2] == C.MIXED


def test_omega_verdicts():
    om = lambda means: {"values": [0.0, 0.25, 0.5, 2.0], "mean": list(means), "std": [0.01] * 4}
    assert C.small_omega_helps(om([0.9, 0.7, 0.8, 1.2]), 5)[2] == C.HOLDS
    assert C.small_omega_helps(om([0.9, 1.0, 1.1, 1.3]), 5)[2] == C.WORSE     # every ω > 0 is worse than CFG
    assert C.small_omega_helps(om([0.9, 0.9, 0.9, 0.9]), 5)[2] == C.DOES_NOT_HOLD
    assert C.small_omega_helps(om([0.9, 0.7, 0.7, 0.7]), 5)[2] == C.MIXED      # helps, never over-corrects


def test_ideal_and_blockdrop_verdicts():
    ideal = {p: {"omegas": [0.0, 0.25], "deltas": [1.0],
                 "mode_shift": {"mean": [[0.9, s]], "std": [[0.01, 0.01]]},
                 "spread_ratio": {"mean": [[0.7, 0.6]], "std": [[0.01, 0.01]]}} for p, s in (("gmm1d", 0.5), ("gmm2d", 0.6))}
    claim, evidence, verdict = C.ideal_weak_corrects(ideal, 5)
    assert verdict == C.HOLDS and "spread ratio 0.600 vs 0.700" in evidence[0]
    ideal["gmm2d"]["mode_shift"]["mean"][0][1] = 0.95
    assert C.ideal_weak_corrects(ideal, 5)[2] == C.MIXED
    main = {"alpha": 1.0, "beta": -0.2, "ratio": 1.5}
    weakish = {"alpha": 0.05, "beta": 0.3, "ratio": 0.8}
    vanishing = {"alpha": -0.05, "beta": -0.01, "ratio": 0.2}          # sub-networks ≈ the full network
    lower = {"gmm1d": {"main": row(0.1), "blockdrop": row(-0.05)}}
    same = {"gmm1d": {"main": row(0.1), "blockdrop": row(0.0)}}
    mech = lambda b: {"gmm1d": {"main": main, "blockdrop": b}}
    assert C.blockdrop_makes_weak_models(mech(weakish), lower, 5)[2] == C.HOLDS
    assert C.blockdrop_makes_weak_models(mech(weakish), same, 5)[2] == C.MIXED      # weak-like, but no correction
    assert C.blockdrop_makes_weak_models(mech(vanishing), same, 5)[2] == C.DOES_NOT_HOLD
    assert "|s|/|g| 1.500 → 0.200" in C.blockdrop_makes_weak_models(mech(vanishing), same, 5)[1][0]


@pytest.mark.parametrize("truth,cfg,s2,verdict", [
    (0.01, 0.30, 0.10, C.HOLDS),               # CFG prefers some modes; S² restores the weights beyond noise
    (0.01, 0.30, 0.40, C.WORSE),               # S² prefers them even more
    (0.01, 0.30, 0.30, C.DOES_NOT_HOLD),       # S² changes nothing
    (0.01, 0.012, 0.005, C.DOES_NOT_HOLD),     # no preference to correct: CFG is within the noise of the truth
])
def test_mode_preference_verdicts(truth, cfg, s2, verdict):
    res = results({"gmm2d4": {"truth": {"mode_balance": (truth, 0.01)}, "cfg": {"mode_balance": (cfg, 0.01)},
                              "s2": {"mode_balance": (s2, 0.01)}}})
    claim, evidence, v = C.mode_preference(res, 5)
    assert v == verdict and "B.1.3" in claim
    assert f"CFG {cfg:.3f}" in evidence[0] and f"S² {s2:.3f}" in evidence[0]


def test_dit_weak_model_and_paper_depth_verdicts():
    weak, cfgish = {"alpha": 0.02, "beta": 0.3, "cos_ref": 0.4, "ratio": 0.5}, {"alpha": 0.4, "beta": 0.0,
                                                                               "cos_ref": 0.0, "ratio": 1.0}
    assert C.dit_weak_model((4, 28), [weak, weak])[2] == C.HOLDS
    assert C.dit_weak_model((4, 28), [cfgish, cfgish])[2] == C.DOES_NOT_HOLD
    assert C.dit_weak_model((4, 28), [weak, cfgish])[2] == C.MIXED
    assert "depth 28: α 0.400" in " ".join(C.dit_weak_model((4, 28), [weak, cfgish])[1])
    better, worse, tie = row(-0.5, 0.1), row(0.5, 0.1), row(0.01, 0.1)
    assert C.paper_depth_corrects([("a", better, 3), ("b", better, 5)])[2] == C.HOLDS
    assert C.paper_depth_corrects([("a", worse, 3), ("b", worse, 5)])[2] == C.WORSE
    assert C.paper_depth_corrects([("a", tie, 3), ("b", tie, 5)])[2] == C.DOES_NOT_HOLD
    assert C.paper_depth_corrects([("a", better, 3), ("b", worse, 5)])[2] == C.MIXED
