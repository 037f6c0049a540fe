"""PAC-Bayes generalization bounds: the kl inverse, the McAllester / Maurer forms, and the
spike-and-slab bound of lottery tickets (Sakamoto & Sato 2022) with a certified version."""

from genlab.bounds.pac_bayes import (
    BoundTerms,
    authors_bound,
    binary_entropy,
    certified_bound,
    gaussian_kl_oracle,
    gaussian_kl_shared,
    kl_bernoulli,
    kl_inverse,
    mc_error_upper,
    prior_variance_grid,
    spike_and_slab_kl,
)

__all__ = [
    "BoundTerms",
    "authors_bound",
    "binary_entropy",
    "certified_bound",
    "gaussian_kl_oracle",
    "gaussian_kl_shared",
    "kl_bernoulli",
    "kl_inverse",
    "mc_error_upper",
    "prior_variance_grid",
    "spike_and_slab_kl",
]
