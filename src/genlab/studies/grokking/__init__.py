"""Study ``grokking``: grokking and the information bottleneck explained by neural-collapse
emergence (Sakamoto & Sato, arXiv 2509.20829, 2025).

Claim under test: test accuracy jumps long after the training set is fit, and the
information-bottleneck compression phase happens at the same time; both are explained by the
contraction of the population within-class variance of the penultimate representation (RNC1),
which runs on a slow time scale set by weight decay (about 1/(lr x weight decay) steps), so both
come earlier with larger weight decay.

Tasks: the paper's MNIST protocol (MLP 784-200-200-10, every parameter x alpha = 8 after default
init, squared error on one-hot targets summed over outputs, AdamW lr 1e-3, batch 100 from the
first 1,000 training examples) and, beyond the paper, modular arithmetic with an MLP or Nanda et
al.'s one-layer transformer. A weight-decay x seed sweep of MLPs runs as one batched program
(:class:`genlab.ensemble.MLPEnsemble`); the control members use alpha = 1.

At each logged step and for each member: train/test loss and accuracy, neural-collapse measures
of the penultimate features on train and on test (the population estimate), the weight norm,
nHSIC(Z;X) and nHSIC(Z;Y) on test batches, the Theorem 3.2 bound next to the measured test error,
and (on a coarser schedule) the compression-based mutual information estimates.
"""

from genlab.studies.base import Study
from genlab.studies.grokking import report, run
from genlab.studies.grokking.config import PRESETS, GrokkingConfig, validate

STUDY = Study(
    name="grokking",
    description="Grokking and the information bottleneck explained by neural-collapse "
    "emergence (Sakamoto & Sato 2025).",
    config_cls=GrokkingConfig,
    presets=PRESETS,
    run=run.run,
    report=report.report,
    validate=validate,
    claims=report.claims,
    key_figure="accuracy_nc",
)
