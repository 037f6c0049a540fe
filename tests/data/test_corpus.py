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
