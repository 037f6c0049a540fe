"""Study ``lock``: DLR-Lock (Sakamoto, Ablin, Danieli & Cuturi, "Locking Pretrained Weights via
Deep Low-Rank Residual Distillation", arXiv 2605.10777, 2026; abstract only, no public code).

Each MLP of a language model (genlab's small GPT, or SmolLM2-135M-Instruct) is replaced by a
deep low-rank residual net distilled to reproduce it (``genlab.lock``); the run measures what
the lock costs the defender (capability, latency, distillation) and what it costs an attacker
who knows it (memory, time and loss of fine-tuning under each attack of
``genlab.lock.attacks``).
"""

from genlab.studies.base import Study
from genlab.studies.lock import report, run
from genlab.studies.lock.config import PRESETS, LockStudyConfig, validate

STUDY = Study(
    name="lock",
    description="DLR-Lock: MLPs replaced by distilled deep low-rank residual nets; fine-tuning "
    "cost under adaptive attacks (Sakamoto et al. 2026).",
    config_cls=LockStudyConfig,
    presets=PRESETS,
    run=run.run,
    report=report.report,
    validate=validate,
    claims=report.claims,
    key_figure="memory_vs_depth",
)
