"""Study ``layerwise``: end-to-end vs layer-wise training seen through normalized HSIC
(Sakamoto & Sato, "End-to-End Training Induces Information Bottleneck through Layer-Role
Differentiation: A Comparative Analysis with Layer-wise Training", TMLR 2024, arXiv 2402.09050).

Claims under test: end-to-end (E2E) training propagates input information through depth
better than layer-wise training (each block trained by its own local loss, no gradient between
blocks); under E2E the layers take different roles and the last layer follows the information
bottleneck, while under layer-wise training every layer behaves alike; E2E generalizes better.

Each (mode, seed) training logs, at log-spaced steps, nHSIC(X; Z_l) and nHSIC(Y; Z_l) for every
block's output (and the logits) on fixed test mini-batches, the same pairs by CKA, and the test
accuracy; at the end a linear probe per block. See ``config.MODES`` for the modes.
"""

from genlab.studies.base import Study
from genlab.studies.layerwise import report, run
from genlab.studies.layerwise.config import PRESETS, LayerwiseConfig, validate

STUDY = Study(
    name="layerwise",
    description="End-to-end vs layer-wise training through normalized HSIC information planes "
    "(Sakamoto & Sato 2024).",
    config_cls=LayerwiseConfig,
    presets=PRESETS,
    run=run.run,
    report=report.report,
    validate=validate,
    claims=report.claims,
    key_figure="planes",
)
