"""Measures of generalization: pure functions, tensors in, numbers or frozen dataclasses out.

Only torch, numpy, scipy and scikit-learn are imported here, never genlab.studies or
genlab.data, so every measure can be used (and tested) on its own.
"""

from genlab.measures.kernels import (
    cka,
    cka_from_grams,
    gaussian_kernel,
    gram,
    hsic,
    hsic_features,
    median_distance,
    nhsic,
    nhsic_approx,
    nhsic_batch,
    nhsic_features,
    normalized_gram,
    normalized_grams,
    nystrom_features,
    rff_features,
    trace_product,
    trace_products,
)
from genlab.measures.mutual_information import (
    MutualInformation,
    knn_entropy,
    mutual_information_compressed,
)
from genlab.measures.nc_bound import GeneralizationBound, generalization_bound
from genlab.measures.neural_collapse import (
    NeuralCollapse,
    NeuralCollapseAccumulator,
    collapse_and_bound,
    neural_collapse,
)

__all__ = [
    "GeneralizationBound",
    "MutualInformation",
    "NeuralCollapse",
    "NeuralCollapseAccumulator",
    "cka",
    "cka_from_grams",
    "collapse_and_bound",
    "gaussian_kernel",
    "gram",
    "generalization_bound",
    "hsic",
    "hsic_features",
    "knn_entropy",
    "median_distance",
    "mutual_information_compressed",
    "neural_collapse",
    "nhsic",
    "nhsic_approx",
    "nhsic_batch",
    "nhsic_features",
    "normalized_gram",
    "normalized_grams",
    "nystrom_features",
    "rff_features",
    "trace_product",
    "trace_products",
]
