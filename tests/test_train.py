import math

import pytest
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


def _block_net_and_heads(seed=0):
    from torch import nn

    from genlab.models import AuxHead, block_shapes
    from genlab.models.mlp import BlockMLP

    torch.manual_seed(seed)
    model = BlockMLP((6,), 3, depth=3, width=5)
    heads = nn.ModuleList([AuxHead(s, 3) for s in block_shapes(model, (6,))])
    return model, heads


def _data(n=16):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_layerwise_step_gives_each_block_only_its_own_local_gradient():
    """Simultaneous layer-wise training: block k's gradient is that of its own auxiliary loss
    alone (inputs detached: nothing from later blocks or the final classifier); the final
    classifier gets only its own loss. Reference: each loss backpropagated by hand, one at a
    time, on a copy."""
    import copy

    import torch.nn.functional as F

    from genlab.train import LayerwiseStepper

    x, y = _data()
    model, heads = _block_net_and_heads()
    ref_model, ref_heads = copy.deepcopy(model), copy.deepcopy(heads)
    opt = torch.optim.SGD([*model.parameters(), *heads.parameters()], lr=0.0)  # no move
    stepper = LayerwiseStepper(model, heads, opt, EndlessSampler(x, y, 16, 0), "ce", 3)
    stepper.step()
    h = x
    for k, block in enumerate(ref_model.blocks):
        z = block(h.detach())
        grads = torch.autograd.grad(F.cross_entropy(ref_heads[k](z), y), list(block.parameters()))
        for got, want in zip(model.blocks[k].parameters(), grads):
            assert torch.allclose(got.grad, want, rtol=1e-6, atol=1e-7)
        h = z
    head_grads = torch.autograd.grad(
        F.cross_entropy(ref_model.head(h.detach()), y), list(ref_model.head.parameters())
    )
    for got, want in zip(model.head.parameters(), head_grads):
        assert torch.allclose(got.grad, want, rtol=1e-6, atol=1e-7)
    # end-to-end backprop gives block 0 a different gradient: the test can tell them apart
    e2e = torch.autograd.grad(
        F.cross_entropy(ref_model(x), y), list(ref_model.blocks[0].parameters())
    )
    assert not torch.allclose(model.blocks[0][1].weight.grad, e2e[0], atol=1e-4)


def test_sequential_layerwise_moves_only_the_trained_block():
    from genlab.train import LayerwiseStepper

    x, y = _data()
    model, heads = _block_net_and_heads()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [*model.blocks[1].parameters(), *heads[1].parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    stepper = LayerwiseStepper(model, heads, opt, EndlessSampler(x, y, 8, 0), "sim", 3, trained=1)
    for _ in range(3):
        stepper.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"blocks.1.0.weight", "blocks.1.0.bias"}, changed


def test_layerwise_checkpoint_round_trip_includes_the_auxiliary_heads():
    from genlab.train import LayerwiseStepper

    x, y = _data()
    model, heads = _block_net_and_heads()
    opt = torch.optim.Adam([*model.parameters(), *heads.parameters()], lr=1e-2)
    stepper = LayerwiseStepper(model, heads, opt, EndlessSampler(x, y, 8, 0), "supcon", 3)
    stepper.step()
    import copy

    # deep copies: as on disk, later steps must not update the saved optimizer state in place
    tensors = {k: v.clone() for k, v in stepper.checkpoint_tensors().items()}
    state = copy.deepcopy(stepper.checkpoint_state())
    ahead = [float(stepper.step()) for _ in range(3)]
    model2, heads2 = _block_net_and_heads(seed=5)
    opt2 = torch.optim.Adam([*model2.parameters(), *heads2.parameters()], lr=1e-2)
    stepper2 = LayerwiseStepper(model2, heads2, opt2, EndlessSampler(x, y, 8, 0), "supcon", 3)
    stepper2.restore(tensors, state)
    assert [float(stepper2.step()) for _ in range(3)] == ahead


def test_input_information_reward_changes_the_block_gradient_by_its_own_term():
    """input_weight w: block k's gradient is that of (local loss - w nHSIC(X; Z_k)) on the batch,
    computed here from the two terms separately."""
    import copy

    import torch.nn.functional as F

    from genlab.measures import normalized_grams, trace_products
    from genlab.train import LayerwiseStepper

    x, y = _data()
    model, heads = _block_net_and_heads()
    ref_model, ref_heads = copy.deepcopy(model), copy.deepcopy(heads)
    opt = torch.optim.SGD([*model.parameters(), *heads.parameters()], lr=0.0)
    stepper = LayerwiseStepper(model, heads, opt, EndlessSampler(x, y, 16, 0), "ce", 3,
                               input_weight=0.5, sigma=2.0)  # fmt: skip
    stepper.step()
    block = ref_model.blocks[0]
    z = block(x)
    local = torch.autograd.grad(
        F.cross_entropy(ref_heads[0](z), y), block[1].weight, retain_graph=True
    )[0]
    info = trace_products(normalized_grams(x[None], 2.0), normalized_grams(z[None], 2.0,
                                                                          detach=False))[0]  # fmt: skip
    reward = torch.autograd.grad(info, block[1].weight)[0].float()
    assert reward.abs().max() > 1e-3  # the term is not negligible: the test can fail
    assert torch.allclose(model.blocks[0][1].weight.grad, local - 0.5 * reward, atol=1e-5)


# --- SAM -----------------------------------------------------------------------------------


def _sam_reference_step(params, grad_fn, lr, rho):
    """One SAM step written out: g = grad(w); e = rho g / ||g||; w <- w - lr grad(w + e)."""
    g = grad_fn(params)
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    ascended = [p + rho * gi / (norm + 1e-12) for p, gi in zip(params, g)]
    g2 = grad_fn(ascended)
    return [p - lr * gi for p, gi in zip(params, g2)]


def test_sam_step_matches_the_written_out_update_and_returns_to_w_exactly():
    from genlab.train import SAM

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)
    ).double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 2, (20,))

    def grad_fn(ps):
        out = torch.func.functional_call(
            net, dict(zip([k for k, _ in net.named_parameters()], ps)), (x,)
        )
        return torch.autograd.grad(torch.nn.functional.cross_entropy(out, y), ps)

    start = [p.detach().clone().requires_grad_() for p in net.parameters()]
    expected = _sam_reference_step(start, grad_fn, 0.1, 0.05)
    opt = SAM(net.parameters(), torch.optim.SGD(net.parameters(), lr=0.1), rho=0.05)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step(lambda: torch.nn.functional.cross_entropy(net(x), y).backward())
    # float64 round-off: two gradient evaluations by different code paths (module vs
    # functional_call) summing over the 20 samples and 5 hidden units, times lr and rho / ||g||
    eps = torch.finfo(torch.float64).eps
    for p, e in zip(net.parameters(), expected):
        tol = 64 * eps * 20 * 5 * max(1.0, float(e.abs().max()))
        assert torch.allclose(p, e, rtol=0, atol=tol)
    # with lr 0 the step must leave w bit for bit as it was ((w + e) - e would not)
    net32 = torch.nn.Linear(50, 3)
    before = [p.detach().clone() for p in net32.parameters()]
    opt32 = SAM(net32.parameters(), torch.optim.SGD(net32.parameters(), lr=0.0), rho=0.37)
    xb = torch.randn(8, 50)
    net32(xb).square().sum().backward()
    opt32.step(lambda: net32(xb).square().sum().backward())
    assert all(torch.equal(p, b) for p, b in zip(net32.parameters(), before))


def test_sam_shares_the_base_optimizers_groups_after_a_resume():
    from genlab.train import SAM

    net = torch.nn.Linear(4, 2)
    base = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    opt = SAM(net.parameters(), base, rho=0.05)
    assert opt.param_groups is base.param_groups and len(base.param_groups) == 1
    opt.load_state_dict(opt.state_dict())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5)
    sched.step()
    assert base.param_groups[0]["lr"] == pytest.approx(0.05)
    assert opt.param_groups is base.param_groups


def test_tied_weights_checkpoint_once_and_load_back():
    from genlab.models.gpt import GPT, GPTConfig
    from genlab.train import load_unique_tensors, unique_tensors

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, d_model=8))
    tensors = unique_tensors(model.state_dict())
    assert set(model.state_dict()) - set(tensors) == {"lm_head.weight"}  # tied to wte.weight
    other = GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=1, n_head=2, d_model=8))
    load_unique_tensors(other, {k: v.clone() for k, v in tensors.items()})
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k
    assert other.lm_head.weight is other.wte.weight
    with pytest.raises(RuntimeError, match="missing"):
        load_unique_tensors(other, {k: v for k, v in tensors.items() if k != "ln_f.weight"})
