"""The layerwise study's run: the measurement against the nHSIC function, the executors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from genlab.cli import main
from genlab.config import DataConfig
from genlab.data import load_data
from genlab.executor import ExecutorConfig
from genlab.measures import cka, nhsic_batch
from genlab.runs import MetricsLog, RunPaths, execute
from genlab.studies import STUDIES
from genlab.studies.layerwise.config import LayerwiseConfig
from genlab.studies.layerwise.run import build, layer_outputs, measurement_batches


def tiny(**kw) -> LayerwiseConfig:
    base = LayerwiseConfig(
        data=DataConfig(name="digits"), modes=("e2e", "layerwise-sequential"), epochs=2,
        sequential_epochs=1, measure_points=3, hsic_batches=2, probe_train=300, probe_steps=20,
        width=16,
    )  # fmt: skip
    return dataclasses.replace(base, **kw)


def test_plane_records_match_nhsic_and_cka_computed_directly(tmp_path):
    """The callback's batched nHSIC (shared R_X, R_Y) equals nhsic_batch / cka called on each
    mini-batch of the trained model's layer outputs."""
    cfg = tiny(modes=("layerwise",))
    execute(STUDIES["layerwise"], cfg, tmp_path / "r", quiet=True)
    records = MetricsLog(RunPaths(tmp_path / "r").metrics).read()
    last = max(r["step"] for r in records if r["split"] == "plane")
    planes = {r["layer"]: r for r in records if r["split"] == "plane" and r["step"] == last}
    ds = load_data(cfg.data)
    model, heads = build(cfg, ds, 0, "ce")
    from genlab.runs import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "r/trainings/layerwise-s0/checkpoints/train")
    model.load_state_dict({k: v for k, v in ckpt.tensors.items() if not k.startswith("aux.")})
    x, y = measurement_batches(cfg, ds)
    outs = layer_outputs(model, x)
    assert len(outs) == len(planes) == len(model.blocks) + 1
    for layer, z in enumerate(outs):
        want_x = sum(nhsic_batch(x[b], z[b], sigma=cfg.sigma) for b in range(len(x))) / len(x)
        want_y = sum(
            nhsic_batch(z[b], y[b], sigma=cfg.sigma, label_kernel=True, num_classes=10)
            for b in range(len(x))
        ) / len(x)
        # one solve of the same float64 systems in another order: round-off of m = 100 terms
        assert planes[layer]["nhsic_x"] == pytest.approx(want_x, rel=1e-9)
        assert planes[layer]["nhsic_y"] == pytest.approx(want_y, rel=1e-9)
        want_cka = sum(cka(x[b], z[b]) for b in range(len(x))) / len(x)
        assert planes[layer]["cka_lin_x"] == pytest.approx(want_cka, rel=1e-9)
        onehot = torch.nn.functional.one_hot(y, 10).double()
        want_rbf = sum(cka(onehot[b], z[b], "gaussian") for b in range(len(x))) / len(x)
        assert planes[layer]["cka_rbf_y"] == pytest.approx(want_rbf, rel=1e-9)


@pytest.mark.slow  # 10 s of process start-up; map_tasks' executors agree in test_executor.py
def test_process_pool_gives_the_records_of_the_local_run(tmp_path):
    local = tiny()
    pool = tiny(parallel=ExecutorConfig(executor="process", workers=2, threads=1))
    execute(STUDIES["layerwise"], local, tmp_path / "a", quiet=True)
    execute(STUDIES["layerwise"], pool, tmp_path / "b", quiet=True)

    # copies land in task order whatever order the trainings finish in: the same file
    assert (
        RunPaths(tmp_path / "b").metrics.read_bytes()
        == RunPaths(tmp_path / "a").metrics.read_bytes()
    )


def test_sequential_training_killed_inside_block_1_resumes_to_the_same_records(
    tmp_path, kill_then_resume
):
    """Killed after a checkpoint inside block 1 of the sequential mode (steps count on across
    blocks, so the resume keeps exactly the records up to that checkpoint)."""
    cfg = tiny(modes=("layerwise-sequential",), checkpoint_every=4)
    study = STUDIES["layerwise"]
    execute(study, cfg, tmp_path / "a", quiet=True)
    per_block = 1437 // 128  # digits: 1,437 training images, batch 128, 1 epoch per block
    # inside block 1 (global steps per_block .. 2 per_block), right after a checkpoint
    at = next(s for s in range(per_block + 5, 2 * per_block) if s % 4 == 0)
    code = (
        "import dataclasses\n"
        "from genlab.config import DataConfig\n"
        "from genlab.executor import ExecutorConfig\n"
        "from genlab.studies.layerwise.config import LayerwiseConfig\n"
        f"CONFIG = {cfg!r}"
    )
    kill_then_resume(study, cfg, code, "after_step", at, tmp_path / "r")
    assert (tmp_path / "r/metrics.jsonl").read_bytes() == RunPaths(
        tmp_path / "a"
    ).metrics.read_bytes()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--modes", "e2e", "backprop"], "modes"),
        (["--model", "lenet5"], "data.name"),  # LeNet5 needs 28 x 28 images, not digits
        (["--hsic-batch-size", "3"], "hsic_batch_size"),
        (["--lr-drops", "1.5"], "lr_drops"),
        (["--hsic-batches", "4"], "hsic_batches"),  # 400 > digits' 360 test samples
    ],
)
def test_bad_config_is_one_line_naming_the_field(args, needle, capsys):
    assert main(["run", "layerwise", "--preset", "smoke", *args, "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_measurement_batches_are_fixed_and_disjoint():
    cfg = tiny()
    ds = load_data(cfg.data)
    x1, y1 = measurement_batches(cfg, ds)
    x2, _ = measurement_batches(cfg, ds)
    assert torch.equal(x1, x2) and x1.shape == (2, 100, *ds.input_shape)
    flat = x1.flatten(0, 1).flatten(1)
    assert len({tuple(r.tolist()) for r in flat}) == 200  # no test sample twice
