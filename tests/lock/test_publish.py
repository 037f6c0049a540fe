"""``genlab lock MODEL --out DIR``: a local Hugging Face folder locked end to end, the folder
read back by ``load_locked``, and bad input refused in one line with exit status 2."""

import json

import pytest
import torch

from genlab.cli import main
from genlab.lock import load_locked, locked_modules
from genlab.lock.publish import PublishConfig, publish
from genlab.measures.capability import perplexity


@pytest.fixture()
def tiny_hf_folder(tmp_path):
    """A random 2-layer Llama with a byte-level tokenizer (256 single-byte tokens, no merges),
    saved as a Hugging Face folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=len(vocab))  # fmt: skip
    folder = tmp_path / "tiny"
    LlamaForCausalLM(cfg).save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok).save_pretrained(folder)
    return folder


FAST = ["--rank", "8", "--steps", "20", "--batch", "64", "--seq-len", "16",
        "--calibration-blocks", "8", "--eval-blocks", "4", "--workers", "1", "--quiet"]  # fmt: skip


def test_lock_writes_a_folder_load_locked_reads(tiny_hf_folder, tmp_path):
    out = tmp_path / "locked"
    cfg = PublishConfig(model=str(tiny_hf_folder), out=out, rank=8, steps=20, batch=64,
                        seq_len=16, calibration_blocks=8, eval_blocks=4, workers=1, quiet=True)  # fmt: skip
    summary = publish(cfg)
    model = load_locked(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert set(locked_modules(model)) == {"model.layers.0.mlp", "model.layers.1.mlp"}
    assert summary["modules"] == 2
    assert summary["parameters_locked"] == sum(p.numel() for p in model.parameters())
    # the summary's perplexity ratio is the saved model's: recompute it from the folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genlab.data.corpus import corpus_splits, token_batches, token_blocks

    tokenizer = AutoTokenizer.from_pretrained(out)  # the tokenizer travels with the model
    original = AutoModelForCausalLM.from_pretrained(tiny_hf_folder, dtype=torch.float32).eval()
    encode = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    held = token_blocks(corpus_splits("bible")[1], encode, 16, 4)
    ratio = perplexity(model, token_batches(held)) / perplexity(original, token_batches(held))
    # same weights, same batches, same code: equal up to float32 summation order
    assert ratio == pytest.approx(summary["perplexity_ratio"], rel=64 * torch.finfo().eps)
    # rank 8 at 64 hidden units: 8 blocks each saving what one MLP saves, so more than 1x
    assert summary["saved_activation_ratio_mlp"] > 1
    lock = json.loads((out / "lock.json").read_text())
    assert lock["config"]["rank"] == 8


def test_cli_prints_a_summary(tiny_hf_folder, tmp_path, capsys):
    assert main(["lock", str(tiny_hf_folder), "--out", str(tmp_path / "o"), *FAST]) == 0
    out = capsys.readouterr().out
    assert "locked 2 modules" in out and "perplexity" in out
    assert load_locked(tmp_path / "o") is not None


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["nosuch", "--out", "o"], "MODEL"),
        (["TINY", "--out", "o", "--rank", "0"], "--rank"),
        (["TINY", "--out", "o", "--lr", "-1"], "--lr"),
        (["TINY", "--out", "FULL"], "--out"),
    ],
)
def test_bad_input_exits_2_in_one_line_and_keeps_files(
    tiny_hf_folder, tmp_path, capsys, args, needle
):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    args = [str(tiny_hf_folder) if a == "TINY" else str(full) if a == "FULL" else a for a in args]
    assert main(["lock", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (full / "keep.txt").read_text() == "mine"


def test_the_readmes_python_use_runs_as_written(tmp_path):
    """The README's three lines, on a tiny Llama and random calibration tokens."""
    from pathlib import Path

    from transformers import LlamaConfig, LlamaForCausalLM

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("**`lock`**") :]
    code = section[
        section.index("```python") + len("```python") : section.index(
            "```\n", section.index("```python") + 9
        )
    ]
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2,
                                         vocab_size=101)).eval()  # fmt: skip
    g = torch.Generator().manual_seed(1)
    calibration = [{"input_ids": torch.randint(0, 101, (4, 16), generator=g)} for _ in range(4)]
    scope = {"model": model, "calibration": calibration}
    exec(compile(code, "README.md", "exec"), scope)  # runs in the test's own folder
    assert set(locked_modules(scope["model"])) == {"model.layers.0.mlp", "model.layers.1.mlp"}
    assert (tmp_path / "locked" / "model.safetensors").exists()
