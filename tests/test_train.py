import math

import torch

from genlab.runs import RunPaths, execute
from genlab.studies import STUDIES
from genlab.train import BatchSampler, EndlessSampler, make_scheduler, measurement_steps


def test_measurement_steps_schedule():
    steps = measurement_steps(1000, every=250, log_points=4, dense_until=((30, 1), (150, 10)))
    assert steps[:30] == list(range(30))
    assert {30, 40, 140, 250, 500, 750, 1000, 1, 10, 100} <= set(steps)
    assert 145 not in steps and steps == sorted(set(steps))


def test_sampler_covers_each_epoch_and_resumes_exactly():
    x = torch.arange(10.0)[:, None]
    y = torch.arange(10)
    s = EndlessSampler(x, y, batch_size=3, seed=0)
    epoch = torch.cat([s.next()[1] for _ in range(3)])
    assert len(set(epoch.tolist())) == 9  # a permutation, last partial batch dropped
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.state_dict().items()}
    ahead = [s.next()[1] for _ in range(7)]
    s2 = EndlessSampler(x, y, batch_size=3, seed=99)
    s2.load_state_dict(state)
    assert all(torch.equal(a, s2.next()[1]) for a in ahead)


def test_cosine_and_step_schedules():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make_scheduler(opt, "cosine", total_steps=100, warmup_steps=10)
    factors = [sched.lr_lambdas[0](s) for s in (0, 9, 10, 55, 100)]
    assert factors[0] == 0.1 and factors[1] == 1.0 and factors[2] == 1.0
    assert math.isclose(factors[3], 0.5, abs_tol=1e-9) and math.isclose(
        factors[4], 0.0, abs_tol=1e-9
    )
    step = make_scheduler(opt, "step", total_steps=100)
    assert [step.lr_lambdas[0](s) for s in (10, 60, 80)] == [1.0, 0.1, 0.1**2]


def test_classify_smoke_reaches_95_percent_on_digits(tmp_path):
    study = STUDIES["classify"]
    summary = execute(study, study.presets["smoke"](), tmp_path / "r", quiet=True)
    assert summary["results"]["test_acc"] >= 0.95
    assert summary["results"]["train_acc"] >= 0.99


def test_label_noise_is_memorized_and_recorded(tmp_path):
    study = STUDIES["classify"]
    cfg = study.presets["noisy"]()
    cfg.steps, cfg.measure_every = 1500, 250
    summary = execute(study, cfg, tmp_path / "r", quiet=True)
    results = summary["results"]
    assert "noisy_acc" in results and "noisy_clean_acc" in results
    # Memorizing 30% flipped labels costs test accuracy relative to the clean smoke run.
    assert results["noisy_acc"] > 0.3 and results["test_acc"] < 0.98
    import json

    noisy = json.loads(RunPaths(tmp_path / "r").noisy_idx.read_text())["noisy_idx"]
    assert len(noisy) == math.ceil(1437 * 0.3)


def test_batch_protocol_drops_partial_batches_and_reshuffles():
    s = BatchSampler(10, 4, seeds=[7, 8])
    g = torch.Generator().manual_seed(7)
    for _epoch in range(3):
        perm = torch.randperm(10, generator=g)
        for i in range(2):  # 2 full batches of 4; the last 2 indices are dropped
            assert torch.equal(s.next()[0], perm[4 * i : 4 * i + 4])
