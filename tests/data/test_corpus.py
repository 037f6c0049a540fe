"""The offline corpora and their fixed held-out splits."""

import pytest

from genlab.data.corpus import corpus_splits, load_bible, load_news


def test_the_bible_has_every_verse_without_references():
    verses = load_bible()
    assert len(verses) == 31102
    assert verses[0] == "In the beginning God created the heaven and the earth."
    assert verses[-1] == "The grace of our Lord Jesus Christ be with you all. Amen."
    assert not any(v[:3].rstrip(":").isdigit() for v in verses[:100])


def test_news_articles_in_id_order():
    articles = load_news()
    assert len(articles) == 3823  # 3,824 rows, one empty
    assert all(a.strip() for a in articles)


def test_held_out_is_the_contiguous_tail():
    train, held = corpus_splits("bible", 0.1)
    assert len(held) == 3110 and len(train) + len(held) == 31102
    assert held[-1].endswith("Amen.") and train[0].startswith("In the beginning")
    with pytest.raises(Exception, match="choose from"):
        corpus_splits("wiki")


def test_token_blocks_cut_the_joined_stream_without_padding():
    import torch

    from genlab.data.corpus import byte_tokens, token_batches, token_blocks

    units = ["ab", "cde", "f", "ghij"]
    blocks = token_blocks(units, byte_tokens, 3, 3)
    stream = list(b"ab\ncde\nf\nghij\n")
    assert blocks.dtype == torch.int64 and blocks.tolist() == [
        stream[0:3],
        stream[3:6],
        stream[6:9],
    ]
    assert token_blocks(units, byte_tokens, 4, 100).shape == (3, 4)  # the units run out
    assert byte_tokens("é") == [0xC3, 0xA9]
    batches = token_batches(torch.arange(10).view(5, 2), size=2)
    assert [b["input_ids"].shape[0] for b in batches] == [2, 2, 1]
    with pytest.raises(Exception, match="fewer than 50 tokens"):
        token_blocks(units, byte_tokens, 50, 1)
