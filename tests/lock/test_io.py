"""A locked Hugging Face model saved and loaded back: same class, identical outputs."""

import json

import pytest
import torch

from genlab.lock import LockConfig, inject, locked_modules
from genlab.lock.io import load_locked, save_locked


def lock_with_random_weights(model, config, seed):
    """Inject, then give every DLR parameter a random value (a lock after distillation:
    nonzero B_l everywhere)."""
    inject(model, config, seed=seed)
    with torch.no_grad():
        for m in locked_modules(model).values():
            for p in m.parameters():
                p.normal_(0, 0.05)


@pytest.fixture()
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=101,
                      tie_word_embeddings=True)  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def test_round_trip_gives_the_same_class_and_identical_outputs(tiny_llama, tmp_path):
    config = LockConfig(rank=8, norm="rms")
    lock_with_random_weights(tiny_llama, config, seed=1)
    save_locked(tiny_llama, tmp_path / "locked", config)
    back = load_locked(tmp_path / "locked")
    assert type(back) is type(tiny_llama)
    assert set(locked_modules(back)) == {"model.layers.0.mlp", "model.layers.1.mlp"}
    ids = torch.randint(0, 101, (2, 9))
    with torch.no_grad():
        assert torch.equal(back(ids).logits, tiny_llama(ids).logits)
    lock = json.loads((tmp_path / "locked/lock.json").read_text())
    assert lock["modules"]["model.layers.0.mlp"]["depth"] == 8  # 64 hidden units / rank 8
    assert not list((tmp_path / "locked").glob("*.pt*")) and not list(
        (tmp_path / "locked").glob("*.bin")
    )


def test_saving_an_unlocked_model_is_refused(tiny_llama, tmp_path):
    with pytest.raises(ValueError, match="no locked module"):
        save_locked(tiny_llama, tmp_path / "x", LockConfig())


def test_genlabs_gpt_round_trips_too(tmp_path):
    from genlab.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, d_model=16)).eval()
    config = LockConfig(rank=16)
    lock_with_random_weights(model, config, seed=2)
    save_locked(model, tmp_path / "gpt", config)
    back = load_locked(tmp_path / "gpt")
    assert type(back) is GPT and back.cfg == model.cfg
    assert back.lm_head.weight is back.wte.weight  # still tied
    ids = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        assert torch.equal(back(ids), model(ids))


def test_a_locked_bert_round_trips(tmp_path):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=32)).eval()  # fmt: skip
    config = LockConfig(target_modules=("intermediate",), rank=8)
    lock_with_random_weights(bert, config, seed=1)
    save_locked(bert, tmp_path / "b", config)
    back = load_locked(tmp_path / "b")
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        assert torch.equal(back(ids).last_hidden_state, bert(ids).last_hidden_state)


def test_a_config_naming_a_non_model_class_is_refused(tiny_llama, tmp_path):
    config = LockConfig(rank=8)
    inject(tiny_llama, config)
    save_locked(tiny_llama, tmp_path / "x", config)
    raw = json.loads((tmp_path / "x/config.json").read_text())
    (tmp_path / "x/config.json").write_text(json.dumps({**raw, "genlab_class": "pipeline"}))
    with pytest.raises(ValueError, match="not a transformers model class"):
        load_locked(tmp_path / "x")
