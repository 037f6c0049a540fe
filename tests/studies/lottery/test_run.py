"""The lottery study's IMP chains: masks, rewinding, pruned weights held at zero, late
rewinding, and equal results from every executor."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from genlab.executor import ExecutorConfig
from genlab.losses import cross_entropy
from genlab.pruning import density, prunable_weights, prune
from genlab.runs import MetricsLog, RunPaths, execute, load_checkpoint
from genlab.studies import STUDIES
from genlab.studies.lottery.config import PRESETS
from genlab.studies.lottery.run import build, chain_data, chain_name
from genlab.train import Callback, evaluate

TINY = dataclasses.replace(
    PRESETS["smoke"](), levels=2, epochs=1, settings=("small-lr", "random"), label_noise=(0.0,),
    measure_train=128, hessian_iters=3, trace_probes=2, sharpness_samples=1,
    sharpness_train=200, bound_steps=2, bound_draws=3, bound_draw_batch=50,
    checkpoint_every=8,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lottery") / "run"
    execute(STUDIES["lottery"], TINY, root, quiet=True)
    return RunPaths(root)


def _chain(paths: RunPaths, setting: str) -> RunPaths:
    return RunPaths(paths.root / "chains" / chain_name(setting, 0.0, 0))


@pytest.mark.parametrize("setting", ["small-lr", "random"])
def test_masks_are_nested_follow_the_schedule_and_come_from_the_trained_weights(tiny_run, setting):
    chain = _chain(tiny_run, setting)
    ds = chain_data(TINY, 0.0, 0)
    model = build(TINY, ds, 0)
    names = prunable_weights(model)
    total = sum(dict(model.named_parameters())[k].numel() for k in names)
    remaining = total
    previous = {k: torch.ones_like(dict(model.named_parameters())[k]) for k in names}
    for level in (1, 2):
        mask = load_file(str(chain.artifact(f"masks/level{level}.safetensors")))
        remaining -= int(0.2 * remaining + 0.5)
        assert density(mask) == remaining / total
        assert all(torch.all(mask[k] <= previous[k]) for k in names)  # nested
        if setting == "small-lr":  # magnitude: recomputable from level L-1's trained weights
            trained = load_checkpoint(chain.stage_checkpoints(f"level{level - 1}")).tensors
            assert all(torch.equal(prune(trained, previous, 0.2)[k], mask[k]) for k in names)
        ckpt = load_checkpoint(chain.stage_checkpoints(f"level{level}")).tensors
        for k in names:  # pruned weights are exactly zero after training
            assert torch.all(ckpt[k][mask[k] == 0] == 0), k
        previous = mask


def test_each_level_starts_from_the_original_initialization_under_its_mask(tiny_run):
    chain = _chain(tiny_run, "small-lr")
    ds = chain_data(TINY, 0.0, 0)
    records = MetricsLog(chain.metrics).read()
    for level in (1, 2):
        mask = load_file(str(chain.artifact(f"masks/level{level}.safetensors")))
        model = build(TINY, ds, 0)  # the same seed: the original initialization
        with torch.no_grad():
            for k, p in model.named_parameters():
                if k in mask:
                    p.mul_(mask[k])
        expected_train = evaluate(model, ds.x_train, ds.y_train, cross_entropy)["acc"]
        expected_test = evaluate(model, ds.x_test, ds.y_test, cross_entropy)["acc"]
        prune_rec = next(r for r in records if r["split"] == "prune" and r["level"] == level)
        assert prune_rec["train_acc_rewound"] == pytest.approx(expected_train, abs=0)
        first = next(r for r in records
                     if r["split"] == "ticket" and r["level"] == level and r["step"] == 0)  # fmt: skip
        assert first["test_acc"] == pytest.approx(expected_test, abs=0)


def test_the_run_copies_every_chain_in_order_and_measures_every_level(tiny_run):
    records = MetricsLog(tiny_run.metrics).read()
    stages = []
    for r in records:
        if not stages or stages[-1] != r["stage"]:
            stages.append(r["stage"])
    assert stages == [chain_name("small-lr", 0.0, 0), chain_name("random", 0.0, 0)]
    measured = {(r["setting"], r["level"]) for r in records if r["split"] == "measure"}
    assert measured == {(s, lv) for s in ("small-lr", "random") for lv in range(3)}
    reinit = {r["level"] for r in records if r["split"] == "reinit"}
    assert reinit == {1, 2}  # the small-lr control, pruned levels only


# slow (15 s: two spawned workers); map_tasks' executors agree in tests/test_executor.py
@pytest.mark.slow
def test_process_pool_gives_the_local_runs_records_byte_for_byte(tiny_run, tmp_path):
    cfg = dataclasses.replace(TINY, parallel=ExecutorConfig(executor="process", workers=2))
    execute(STUDIES["lottery"], cfg, tmp_path / "pool", quiet=True)
    assert (tmp_path / "pool/metrics.jsonl").read_bytes() == tiny_run.metrics.read_bytes()


def test_late_rewinding_starts_each_level_from_the_saved_step(tmp_path):
    cfg = dataclasses.replace(TINY, levels=1, settings=("small-lr",), rewind_step=3)
    execute(STUDIES["lottery"], cfg, tmp_path / "late", quiet=True)
    chain = RunPaths(tmp_path / "late/chains" / chain_name("small-lr", 0.0, 0))
    state = load_file(str(chain.artifact("rewind.safetensors")))
    init = build(cfg, chain_data(cfg, 0.0, 0), 0).state_dict()
    assert not torch.equal(state["body.1.weight"], init["body.1.weight"])  # trained 3 steps
    mask = load_file(str(chain.artifact("masks/level1.safetensors")))
    ds = chain_data(cfg, 0.0, 0)
    model = build(cfg, ds, 0)
    model.load_state_dict({k: v * mask[k] if k in mask else v for k, v in state.items()})
    expected = evaluate(model, ds.x_test, ds.y_test, cross_entropy)["acc"]
    records = MetricsLog(chain.metrics).read()
    first = next(r for r in records
                 if r["split"] == "ticket" and r["level"] == 1 and r["step"] == 0)  # fmt: skip
    assert first["test_acc"] == expected


class Interrupt(Exception):
    pass


# inside level 1's re-init control (its ticket trained, its measure not yet); a kill inside a
# ticket's training is the contract test's
@pytest.mark.parametrize("stop_at_call", [9])
def test_a_chain_interrupted_inside_a_level_resumes_to_the_same_records(
    tiny_run, tmp_path, stop_at_call
):
    """The callback fires at steps 0, 10 and 20 of each 22-step training (one epoch of 1,437
    digits in batches of 64): call 9 is step 20 of level 1's re-init control, which resumes
    from its checkpoint at step 16 (one every 8 steps)."""
    calls = [0]

    def boom(loop):
        calls[0] += 1
        if calls[0] == stop_at_call:
            raise Interrupt

    study = STUDIES["lottery"]
    every_ten = Callback(boom, every=10)
    with pytest.raises(Interrupt):
        execute(study, TINY, tmp_path / "r", quiet=True, extra_callbacks=[every_ten])
    stages = sorted(p.stem for p in (tmp_path / "r/chains").rglob("stages/*.json"))
    assert stages, "interrupted inside the first chain"
    assert execute(study, TINY, tmp_path / "r", quiet=True, resume=True)["status"] == "complete"
    assert (tmp_path / "r/metrics.jsonl").read_bytes() == tiny_run.metrics.read_bytes()


def test_a_diverging_chain_ends_with_a_record_and_the_run_completes(tmp_path):
    import math
    import pickle

    from genlab.runs import Diverged

    e = pickle.loads(pickle.dumps(Diverged(7, math.inf)))  # a worker can hand it back
    assert (e.step, e.loss, str(e)) == (7, math.inf, "loss became inf at step 7")
    cfg = dataclasses.replace(TINY, settings=("large-lr",), lr_large=1e6)
    assert execute(STUDIES["lottery"], cfg, tmp_path / "d", quiet=True)["status"] == "complete"
    records = MetricsLog(RunPaths(tmp_path / "d").metrics).read()
    diverged = [r for r in records if r["split"] == "diverged"]
    assert [(r["setting"], r["level"]) for r in diverged] == [("large-lr", 0)]
    assert not any(r["split"] == "measure" and r["setting"] == "large-lr" for r in records)
    # the chain run again keeps the verdict instead of training the diverged level again
    from genlab.studies.lottery.run import ChainTask, run_chain

    chain = tmp_path / "d/chains" / chain_name("large-lr", 0.0, 0)
    before = (chain / "metrics.jsonl").read_bytes()
    run_chain(ChainTask(cfg, "large-lr", 0.0, 0, str(chain)))
    assert (chain / "metrics.jsonl").read_bytes() == before
