"""The attacks against explicit references: the concatenated and dense MLPs by their formulas,
checkpointing by exact gradients, LoRA by what trains, re-distillation by its fit, fine-tuning
by its loss and schedule, the step cost by what an AdamW step must hold."""

import copy

import pytest
import torch
from torch.nn import functional as F

from genlab.errors import ConfigError
from genlab.lock import LockConfig, inject, locked_modules
from genlab.lock.attacks import (
    ATTACKS,
    DenseMLP,
    FinetuneConfig,
    add_lora,
    checkpoint_dlr,
    checkpoint_layers,
    concatenated_mlp,
    concatenated_model,
    decoder_layers,
    eval_loss,
    finetune,
    lm_loss,
    prepare_attack,
    redistill,
    step_cost,
    steps_to_reach,
)
from genlab.models.gpt import GPT, GPTConfig

EPS64 = torch.finfo(torch.float64).eps


def _gpt(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, d_model=16)).to(dtype)


def _locked(dtype=torch.float32, **kw):
    model = _gpt(dtype)
    inject(model, LockConfig(rank=kw.pop("rank", 16), **kw), seed=0)
    for m in locked_modules(model).values():  # B_l = 0 at init: give every block a nonzero map
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.2, generator=torch.Generator().manual_seed(p.numel()))
    return model


def _ids(n=4, t=12, seed=3):
    return torch.randint(0, 50, (n, t), generator=torch.Generator().manual_seed(seed))


def _counting(n, t=12, seed=3):
    """Blocks counting up mod 50 from random starts: learnable, unlike uniform random tokens,
    whose best possible loss (ln 50) an untrained GPT-2-initialized model already has."""
    starts = torch.randint(0, 50, (n, 1), generator=torch.Generator().manual_seed(seed))
    return (starts + torch.arange(t)) % 50


@pytest.mark.parametrize("block", ["gelu", "swiglu"])
def test_dense_mlp_is_its_formula(block):
    torch.manual_seed(0)
    mlp = DenseMLP(6, 10, block).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    if block == "gelu":
        ref = F.gelu(x @ mlp.w_in.weight.T + mlp.w_in.bias) @ mlp.w_out.weight.T + mlp.w_out.bias
    else:
        ref = (F.silu(x @ mlp.w_gate.weight.T) * (x @ mlp.w_in.weight.T)) @ mlp.w_out.weight.T
    torch.testing.assert_close(
        mlp(x), ref, rtol=0, atol=64 * EPS64 * float(ref.detach().abs().max())
    )


def test_concatenated_mlp_sums_the_blocks_read_from_x():
    model = _locked(torch.float64)
    locked = next(iter(locked_modules(model).values()))
    mlp = concatenated_mlp(locked)
    x = torch.randn(7, 16, dtype=torch.float64)
    # the wide MLP is sum_l B_l gelu(A_l x + a_l) + b_l: every block reading x itself
    ref = sum(b.up(F.gelu(b.down(x))) for b in locked.dlr.blocks)
    torch.testing.assert_close(mlp(x), ref, rtol=0, atol=256 * EPS64 * float(ref.abs().max()))
    assert not torch.allclose(mlp(x), locked(x))  # depth > 1: not the DLR-Net itself


def test_concatenating_a_split_lock_before_training_gives_back_the_original_mlps():
    original = _gpt(torch.float64)
    model = copy.deepcopy(original)
    inject(model, LockConfig(rank=16, init="split"), seed=0)
    dense = concatenated_model(model)
    assert not locked_modules(dense) and locked_modules(model)  # a copy; the model is kept
    ids = _ids()
    ref = original(ids)
    torch.testing.assert_close(dense(ids), ref, rtol=0, atol=1e3 * EPS64 * float(ref.abs().max()))


def test_checkpointing_gives_the_same_gradients_and_saves_less():
    from genlab.measures.memory import saved_activation_bytes

    ids = _ids()
    grads = {}
    for how in ("plain", "layers", "dlr"):
        model = _locked(torch.float64)
        if how == "layers":
            checkpoint_layers(model)
        elif how == "dlr":
            checkpoint_dlr(model, 2)
        saved, loss = saved_activation_bytes(
            lambda m=model: lm_loss(m, ids), list(model.parameters())
        )
        loss.backward()
        grads[how] = (saved, [p.grad.clone() for p in model.parameters()])
    for how in ("layers", "dlr"):
        assert grads[how][0] < grads["plain"][0]
        for g, ref in zip(grads[how][1], grads["plain"][1]):
            torch.testing.assert_close(
                g, ref, rtol=0, atol=1e3 * EPS64 * (1 + float(ref.abs().max()))
            )
    with pytest.raises(ConfigError, match="checkpoint_every"):
        checkpoint_dlr(_locked(), 0)


def test_decoder_layers_of_gpt_and_llama_and_a_clear_error_otherwise():
    from transformers import LlamaConfig, LlamaForCausalLM

    gpt = _gpt()
    assert decoder_layers(gpt) is gpt.h
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, vocab_size=50))  # fmt: skip
    assert decoder_layers(llama) is llama.model.layers
    with pytest.raises(ConfigError, match="no decoder layer stack"):
        decoder_layers(torch.nn.Linear(2, 2))


def test_lora_on_attention_trains_only_adapters_of_the_attention_projections():
    model = add_lora(_locked(), "attention", rank=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(".attn." in n for n in trainable)  # never the MLP's c_proj or a DLR layer
    assert {n.split(".attn.")[1].split(".")[0] for n in trainable} == {"c_attn", "c_proj"}
    every = add_lora(_locked(), "all-linear", rank=4)
    names = [n for n, p in every.named_parameters() if p.requires_grad]
    assert any(".dlr.blocks." in n for n in names)  # the DLR-Nets' layers get adapters too


def test_prepare_attack_knows_every_attack_and_refuses_others():
    model = _locked()
    for attack in ATTACKS:
        ready, context = prepare_attack(model, attack, lora_rank=2, checkpoint_every=2)
        with context():
            lm_loss(ready, _ids()).backward()
    assert all(p.grad is None for p in model.parameters())  # the attacks work on copies
    with pytest.raises(ConfigError, match="unknown attack"):
        prepare_attack(model, "prayer")


def test_redistill_replaces_every_dlr_net_by_a_fitted_dense_mlp():
    model = _locked(rank=16, depth=1)  # a depth-1 DLR-Net is an MLP of width 16: a fit exists
    data = [{"input_ids": _ids(8, 16, s)} for s in range(4)]
    dense, rep = redistill(model, data, steps=400, lr=1e-2, batch=256)
    assert not locked_modules(dense) and len(rep.errors) == 2
    assert rep.tokens == 4 * 8 * 16 and rep.steps == 400
    assert max(rep.errors.values()) < 0.05
    ids = _ids()
    assert float(F.mse_loss(dense(ids), model(ids))) < 0.05 * float(model(ids).var())


def test_lm_loss_and_eval_loss_by_explicit_loop():
    model = _gpt(torch.float64)
    ids = _ids(5, 9)
    nll = []
    for b in range(5):
        logits = model(ids[b : b + 1, :-1])[0]
        for t in range(8):
            nll.append(-torch.log_softmax(logits[t], -1)[ids[b, t + 1]])
    ref = torch.stack(nll).mean()
    tol = 1e3 * EPS64 * float(ref)
    torch.testing.assert_close(lm_loss(model, ids), ref, rtol=0, atol=tol)
    assert eval_loss(model, ids, batch=2) == pytest.approx(float(ref), abs=tol)


def test_finetune_is_seeded_evaluates_on_schedule_and_lowers_the_loss():
    blocks, held = _counting(64, 12, 1), _counting(8, 12, 2)
    cfg = FinetuneConfig(steps=25, lr=3e-3, batch=8, eval_every=10, seed=4)
    a, b = _gpt(), _gpt()
    seen = []
    out = finetune(a, blocks, held, cfg, on_eval=lambda s, loss: seen.append(s))
    assert out["eval_steps"] == seen == [0, 10, 20, 25] and len(out["step_s"]) == 25
    assert out["eval_loss"][-1] < out["eval_loss"][0]
    again = finetune(b, blocks, held, cfg)
    assert again["train_loss"] == out["train_loss"]


def test_steps_to_reach():
    assert steps_to_reach([0, 10, 20], [3.0, 2.5, 2.0], 2.5) == 10
    assert steps_to_reach([0, 10, 20], [3.0, 2.5, 2.0], 1.9) is None


def test_step_cost_counts_saved_activations_and_an_adam_steps_peak():
    from genlab.measures.memory import saved_activation_bytes

    model = _locked()
    ids = _ids()
    cost = step_cost(model, ids)
    ref, _ = saved_activation_bytes(lambda: lm_loss(model, ids), list(model.parameters()))
    assert cost["saved_bytes"] == ref
    n = sum(p.numel() for p in model.parameters())
    assert cost["trainable"] == n
    # at the optimizer step, parameters, gradients and AdamW's two moments all exist
    assert cost["peak_bytes"] >= 4 * 4 * n
    lora = step_cost(add_lora(copy.deepcopy(model), "attention", 2), ids)
    assert lora["trainable"] < n and lora["peak_bytes"] < cost["peak_bytes"]
