"""Real-data part of the attention study: text loader, ViT, cached last-block path, tiny run."""

from __future__ import annotations

import torch

from genlab.data.text import load_minilm
from genlab.models.cached_last_layer import BertLastLayerCached, encode_texts


def test_minilm_loads_offline_and_cached_last_layer_matches(rounding_atol):
    tokenizer, model = load_minilm()
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    texts = ["a gorgeous, witty film", "dull.", "neither here nor there, but long enough to pad"]
    h, mask, cls = encode_texts(tokenizer, model, texts, max_length=32)
    enc = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        full = model(**enc).last_hidden_state[:, 0]
        head = torch.nn.Linear(384, 2)
        cached = BertLastLayerCached(model.encoder.layer[-1], head)
        out, attn = cached.cls_output(h, mask)
    # One BERT layer: q, k, v, output dense, two LayerNorms and the intermediate dense over
    # d = 384, the output dense over 4d, scores over d_head = 32, softmax and mixing over T.
    n_terms = 7 * 384 + 4 * 384 + 32 + 2 * h.shape[1]

    def one_layer(hh):
        return cached.cls_output(hh, mask)[0]

    # encode_texts runs all 6 layers on the rows in another order: 6 x the terms.
    assert torch.allclose(cls, full, rtol=0, atol=rounding_atol(one_layer, h, 6 * n_terms))
    assert torch.allclose(out, full, rtol=0, atol=rounding_atol(one_layer, h, n_terms))
    assert attn.shape == (3, 12, h.shape[1])
    assert torch.allclose(attn.sum(-1), torch.ones(3, 12), atol=1e-5)
    assert int(mask[1].sum()) < h.shape[1]
    assert float(attn[1, :, int(mask[1].sum()) :].sum()) == 0.0


def test_authors_tokenization_and_pooler_head_match_the_full_model(rounding_atol):
    """Without [CLS]/[SEP] (the authors' tokenization) the first token is a word; the cached
    last layer with BERT's pooler as head gives the full model's pooler output."""
    tokenizer, model = load_minilm()
    texts = ["a gorgeous, witty film", "dull.", "neither here nor there, but long enough to pad"]
    h, mask, first = encode_texts(tokenizer, model, texts, max_length=32, add_special_tokens=False)
    enc = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt",
                    add_special_tokens=False)  # fmt: skip
    assert enc["input_ids"][1, 0] != tokenizer.cls_token_id  # "dull": no [CLS] in front
    assert int(mask[1].sum()) == int(enc["attention_mask"][1].sum())
    with torch.no_grad():
        full = model(**enc)
        pooler = torch.nn.Sequential(model.pooler.dense, torch.nn.Tanh())
        cached = BertLastLayerCached(model.encoder.layer[-1], pooler)
        pooled, _ = cached.logits(h, mask)
    n_terms = 7 * 384 + 4 * 384 + 32 + 2 * h.shape[1]

    def one_layer(hh):
        return cached.cls_output(hh, mask)[0]

    atol_first = rounding_atol(one_layer, h, 6 * n_terms)
    assert torch.allclose(first, full.last_hidden_state[:, 0], rtol=0, atol=atol_first)
    # the pooler adds one 384-term dense layer; its amplification is in the ulp probe
    atol_pooled = rounding_atol(lambda hh: cached.logits(hh, mask)[0], h, n_terms + 384)
    assert torch.allclose(pooled, full.pooler_output, rtol=0, atol=atol_pooled)


def test_a_text_without_tokens_is_named():
    import pytest

    tokenizer, model = load_minilm()
    with pytest.raises(ValueError, match="text 1 .* has no tokens"):
        encode_texts(tokenizer, model, ["fine", ""], max_length=8, add_special_tokens=False)
