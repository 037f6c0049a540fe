"""The grokking report's claims: each verdict from synthetic groups of onsets."""


def _group(alpha, wd, fit, rise, test_rnc1=None, train_rnc1=None, bound=0.9, seeds=3):
    """A summarized group of ``seeds`` identical members with the given onset steps."""
    from genlab.studies.grokking.analysis import summarize_group

    member = {
        "fit": fit, "plateau_test_acc": 0.2, "final_test_acc": 0.88, "final_train_acc": 1.0,
        "rise_start": rise and rise // 2, "rise_half": rise,
        "test_rnc1_start": test_rnc1 and test_rnc1 // 2, "test_rnc1_half": test_rnc1,
        "train_rnc1_start": train_rnc1 and train_rnc1 // 2, "train_rnc1_half": train_rnc1,
        "test_rnc1_end_to_peak": 0.1, "train_rnc1_end_to_fit": 0.1,
    }  # fmt: skip
    return summarize_group(
        {
            "alpha": alpha,
            "weight_decay": wd,
            "members": [{"member": f"s{i}", **member} for i in range(seeds)],
            "final_bound_stated_train": [bound] * seeds,
            "final_bound_variant_train": [0.05] * seeds,
            "final_error": [0.12] * seeds,
        }  # fmt: skip
    )


def test_grokking_claims_map_the_measurements_to_verdicts():
    from genlab.studies.grokking.analysis import summarize_sweep
    from genlab.studies.grokking.config import MNIST_DATA, GrokkingConfig
    from genlab.studies.grokking.report import grokking_claims

    cfg = GrokkingConfig(data=MNIST_DATA, model="mlp")
    groups = {
        # delayed; test RNC1 halved 1.5x after the rise; training RNC1 10x after the fit
        "alpha=8 lambda=0.1": _group(8.0, 0.1, 2000, 20000, 30000, 20000),
        # not delayed; test RNC1 never halved; training RNC1 halved right at the fit
        # (and its bound from training statistics, 0.05, is below the test error 0.12)
        "alpha=8 lambda=1": _group(8.0, 1.0, 1000, 1500, None, 1100, bound=0.05),
        "alpha=8 lambda=3": _group(8.0, 3.0, None, None),  # never fit
        "alpha=1 lambda=0.1": _group(1.0, 0.1, 500, 600),  # control: no delay
    }
    analysis = summarize_sweep(groups)
    claims = grokking_claims(cfg, analysis)
    verdicts = [(c.claim.split(":")[0], c.verdict) for c in claims]
    assert verdicts == [
        ("alpha=8 lambda=0.1", "held"),  # rise at 10x the fit step
        ("alpha=8 lambda=0.1", "held"),  # (a) test RNC1 with the rise
        ("alpha=8 lambda=0.1", "held"),  # (b) training RNC1 long after the fit, with the rise
        ("alpha=8 lambda=0.1", "held"),  # bound 0.9 >= test error 0.12
        ("alpha=8 lambda=1", "not held"),  # rise at 1.5x the fit step
        ("alpha=8 lambda=1", "not held"),  # test RNC1 never halved
        ("alpha=8 lambda=1", "not held"),  # training RNC1 halved at 1.1x the fit step
        ("alpha=8 lambda=1", "not held"),  # bound 0.05 < test error 0.12
        ("alpha=8 lambda=3", "not tested at this scale"),
        ("Stronger weight decay brings grokking earlier (median rise falls as lambda grows, "
         "exponent's 95% interval below 0)", "held"),  # 20,000 at 0.1, 1,500 at 1, 3 seeds each
        ("alpha=1 lambda=0.1 (control)", "held"),
    ]  # fmt: skip
    assert claims[0].measured == (
        "train fit at step 2,000 (test accuracy 20.0%); test rise halfway at step 20,000 (10.0x "
        "the fit step), final test accuracy 88.0%"
    )
    assert "Liu et al. 2023 (Omnigrok)" in claims[0].paper and "Fig. 2" in claims[0].paper
    assert "lags in 3" in claims[1].measured and "median 1.50" in claims[1].measured
    assert "no rise in any seed for lambda = 3" in claims[9].measured
    assert "vacuous" not in claims[3].measured  # bound 0.9 is informative
    vacuous = {"alpha=8 lambda=0.1": _group(8.0, 0.1, 2000, 20000, 30000, 20000, bound=2.5)}
    bound_claim = grokking_claims(cfg, summarize_sweep(vacuous))[3]
    assert bound_claim.verdict == "held" and "vacuous (above 1)" in bound_claim.measured
