"""Study ``lottery``: lottery tickets by iterative magnitude pruning, their flatness, their
distance from initialization and a spike-and-slab PAC-Bayes bound (Sakamoto & Sato, "Analyzing
Lottery Ticket Hypothesis from PAC-Bayesian Theory Perspective", NeurIPS 2022, arXiv
2205.07320; the authors' code, github keitaroskmt/lth-pacbayes, read as a specification).

Claims under test: IMP finds winning tickets only with a small learning rate in deep networks,
so winning tickets sit in relatively sharp minima; flatness (a larger learning rate, or SAM)
improves accuracy and robustness to label noise; the distance from the initial weights is
deeply involved in winning tickets; a PAC-Bayes bound with a spike-and-slab prior explains the
trade-off. Each IMP chain (setting x label-noise rate x seed) is a sub-run whose levels are
stages (``run``); ``config.SETTINGS`` lists the settings.
"""

from genlab.studies.base import Study
from genlab.studies.lottery import report, run
from genlab.studies.lottery.config import PRESETS, LotteryConfig, validate

STUDY = Study(
    name="lottery",
    description="Lottery tickets by IMP: flatness, distance from init and a spike-and-slab "
    "PAC-Bayes bound (Sakamoto & Sato 2022).",
    config_cls=LotteryConfig,
    presets=PRESETS,
    run=run.run,
    report=report.report,
    validate=validate,
    claims=report.claims,
    key_figure="accuracy",
)
