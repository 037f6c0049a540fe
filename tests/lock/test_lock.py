"""lock_model on a tiny Llama: teacher and student inputs, and the executor's equality."""

import pytest
import torch

from genlab.executor import ExecutorConfig
from genlab.lock import LockConfig, locked_modules
from genlab.lock.distill import capture_mlp_io
from genlab.lock.inject import fuse_encoder_mlps
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


def test_an_interrupted_lock_resumes_from_the_finished_modules():
    dc = DistillConfig(steps=15, batch=128)
    full = _tiny_llama()
    finished = {}
    lock_model(full, LockConfig(rank=8), _calibration(2), dc,
               on_module=lambda n, state, values: finished.setdefault(n, (state, values)))  # fmt: skip
    assert list(finished) == ["model.layers.0.mlp", "model.layers.1.mlp"]
    # resume with the first module done: only the second is distilled, the result is the same
    calls = []
    resumed = _tiny_llama()
    report = lock_model(resumed, LockConfig(rank=8), _calibration(2), dc,
                        done={"model.layers.0.mlp": finished["model.layers.0.mlp"]},
                        on_module=lambda n, *_: calls.append(n))  # fmt: skip
    assert calls == ["model.layers.1.mlp"]
    assert report["model.layers.0.mlp"]["error"] == finished["model.layers.0.mlp"][1]["error"]
    for (ka, va), (kb, vb) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_ray_gives_the_local_lock_bit_for_bit():
    ray = pytest.importorskip("ray")
    a, b = _tiny_llama(), _tiny_llama()
    dc = DistillConfig(steps=10, batch=128)
    lock_model(a, LockConfig(rank=8), _calibration(2), dc)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        lock_model(b, LockConfig(rank=8), _calibration(2), dc, ExecutorConfig(executor="ray"))
    finally:
        ray.shutdown()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_the_end_to_end_pass_is_reported():
    model = _tiny_llama()
    report = lock_model(model, LockConfig(rank=8), _calibration(2),
                        DistillConfig(steps=20, lr=1e-2, batch=128, kl_steps=5, kl_lr=1e-3))  # fmt: skip
    assert len(report["end_to_end"]["kl"]) == 5


def test_a_bert_encoder_is_locked_with_padding_masked():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=32,
                                initializer_range=0.3)).eval()  # fmt: skip
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[:, 9:] = 0  # padded tail: not calibration tokens
    calibration = [{"input_ids": torch.randint(0, 50, (4, 12), generator=g),
                    "attention_mask": mask} for _ in range(6)]  # fmt: skip
    ids = torch.randint(0, 50, (2, 9), generator=g)
    with torch.no_grad():
        before = bert(ids).last_hidden_state
    fuse_encoder_mlps(bert)
    x, _ = capture_mlp_io(bert, ["encoder.layer.0.intermediate"], calibration)[
        "encoder.layer.0.intermediate"
    ]
    assert len(x) == 6 * 4 * 9  # the padded tail is not calibration data
    report = lock_model(bert, LockConfig(target_modules=("intermediate",), rank=8),
                        calibration, DistillConfig(steps=300, lr=1e-2, batch=128))  # fmt: skip
    assert set(report) == {"encoder.layer.0.intermediate", "encoder.layer.1.intermediate"}
    for r in report.values():
        assert r["first_error"] > 0.9 and r["error"] < 0.25
    with torch.no_grad():
        after = bert(ids).last_hidden_state
    # relative change of the encoder's output: 1.2 with undistilled (zero) DLR-Nets, 0.15 here
    assert float((after - before).norm() / before.norm()) < 0.3
