"""lock_model on a tiny Llama: teacher and student inputs, and the executor's equality."""

import pytest
import torch

from genlab.executor import ExecutorConfig
from genlab.lock import LockConfig, locked_modules
from genlab.lock.lock import DistillConfig, lock_model


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=101)  # fmt: skip
    return LlamaForCausalLM(cfg).eval()


def _calibration(n=6):
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(0, 101, (4, 16), generator=g)} for _ in range(n)]


@pytest.mark.parametrize("inputs", ["teacher", "student"])
def test_lock_model_distills_every_mlp_and_keeps_the_function(inputs):
    model = _tiny_llama()
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = torch.log_softmax(model(ids).logits, -1)
    report = lock_model(model, LockConfig(rank=8), _calibration(),
                        DistillConfig(steps=300, lr=1e-2, batch=256, inputs=inputs))  # fmt: skip
    assert set(report) == set(locked_modules(model)) == {"model.layers.0.mlp", "model.layers.1.mlp"}
    for r in report.values():
        assert r["first_error"] > 0.9 and r["error"] < 0.25  # from zero output to a fit
    with torch.no_grad():
        after = torch.log_softmax(model(ids).logits, -1)
    kl = float((before.exp() * (before - after)).sum(-1).mean())
    assert kl < 0.01


@pytest.mark.slow  # two spawned workers (about 15 s); map_tasks' executors agree in test_executor
def test_process_pool_gives_the_local_lock_bit_for_bit():
    a, b = _tiny_llama(), _tiny_llama()
    dc = DistillConfig(steps=20, batch=128)
    lock_model(a, LockConfig(rank=8), _calibration(2), dc)
    lock_model(b, LockConfig(rank=8), _calibration(2), dc,
               ExecutorConfig(executor="process", workers=2))  # fmt: skip
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
