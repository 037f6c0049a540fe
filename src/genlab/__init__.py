"""genlab: the science of how neural networks generalize and how their training can be shaped."""

import os

# Never touch the network at run time: set before transformers/huggingface_hub is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

__version__ = "0.1.0"
