"""Study ``attention``: benign overfitting in token selection of attention (Sakamoto & Sato,
"Benign Overfitting in Token Selection of Attention Mechanism", ICML 2025, arXiv 2409.17625).

Claim under test: trained by gradient descent on token-selection data with label noise, a
single-head attention layer can fit the flipped labels by attending to noise-carrying tokens
while still generalizing (benign overfitting); which regime occurs - not overfitting, benign or
harmful - is governed by the signal-to-noise ratio ``SNR = ||mu|| / (sigma sqrt(d))`` together
with the sample size (a boundary ``n SNR^2 = C``); and generalization can arrive only after an
initial overfitting phase (delayed generalization).

Parts (``parts`` selects them; each is a stage of the run: a finished part is skipped on
``--resume``, an interrupted one is redone from its start):

* ``fig3`` - per-token attention of one clean and one noisy training sample over GD steps in
  three settings (paper Fig. 3), with the measured regime next to the expected one;
* ``grid`` - the ``||mu|| x d`` phase diagram (paper Fig. 5) via :func:`genlab.studies.attention.grid.run_grid`,
  the regime map and the fitted ``n SNR^2 = C`` boundary (``grid.json``);
* ``delayed`` - long-horizon test loss and test attention near the boundary: the step where the
  training set (flipped labels included) is fit and the step where test loss is smallest;
* ``transformer`` - :class:`~genlab.models.token_attention.TokenTransformer` (one pre-LN encoder
  layer with a CLS token) on the benign setting at small d;
* ``real`` - two-phase experiments on real data, from :mod:`genlab.studies.attention.real`.
"""

from genlab.studies.attention import report, run
from genlab.studies.attention.config import PRESETS, AttentionConfig, validate
from genlab.studies.base import Study

STUDY = Study(
    name="attention",
    description="Benign overfitting in token selection of attention (Sakamoto & Sato, ICML "
    "2025): attention dynamics, SNR phase diagram, delayed generalization.",
    config_cls=AttentionConfig,
    presets=PRESETS,
    run=run.run,
    report=report.report,
    validate=validate,
    claims=report.claims,
    key_figure="fig3_attention",
)
