"""Measures of generalization: pure functions, tensors in, numbers or frozen dataclasses out.

Only torch, numpy, scipy and scikit-learn are imported here, never genlab.studies or
genlab.data, so every measure can be used (and tested) on its own.
"""

from genlab.measures.hsic import (
    gaussian_kernel,
    nhsic,
    nhsic_batch,
    normalized_gram,
    normalized_grams,
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
    "collapse_and_bound",
    "gaussian_kernel",
    "generalization_bound",
    "knn_entropy",
    "mutual_information_compressed",
    "neural_collapse",
    "nhsic",
    "nhsic_batch",
    "normalized_gram",
    "normalized_grams",
    "trace_product",
    "trace_products",
]
