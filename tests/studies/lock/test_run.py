"""The lock study's locking stage on a model with a tied head: the end-to-end pass is stored
and a resumed run loads it back instead of training again."""

import dataclasses

import pytest
import torch

from genlab.lock import LockConfig, inject
from genlab.lock.inject import locked_modules
from genlab.lock.lock import DistillConfig
from genlab.models.gpt import GPT, GPTConfig
from genlab.runs import Run, RunPaths
from genlab.studies.lock.config import PRESETS
from genlab.studies.lock.run import dlr_state, load_dlr_state, locked_copy


def test_the_end_to_end_stage_of_a_tied_model_is_stored_and_resumed(tmp_path):
    torch.manual_seed(0)
    base = GPT(GPTConfig(vocab_size=256, block_size=16, n_layer=2, n_head=2, d_model=32)).eval()
    assert base.lm_head.weight is base.wte.weight  # the case safetensors refuses whole
    cfg = dataclasses.replace(PRESETS["smoke"](), distill=DistillConfig(steps=3, lr=1e-2,
                              batch=64, kl_steps=2, kl_lr=1e-2))  # fmt: skip
    calibration = torch.randint(0, 256, (8, 16), generator=torch.Generator().manual_seed(1))
    paths = RunPaths(tmp_path / "run")
    first = locked_copy(Run(paths, cfg, quiet=True), cfg, base, calibration, 8, "random")
    assert paths.artifact("locked/r8/end_to_end.safetensors").exists()
    resumed = locked_copy(Run(paths, cfg, resume=True, quiet=True), cfg, base, calibration, 8,
                          "random")  # fmt: skip
    a, b = dlr_state(first), dlr_state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    run = Run(paths, cfg, resume=True, quiet=True)
    assert len([r for r in run.metrics.read() if r["split"] == "end_to_end"]) == 1  # not rerun
    assert len(locked_modules(resumed)) == 2
    # what was stored is the end-to-end pass's result, not the module-wise fits
    no_kl = dataclasses.replace(cfg, distill=dataclasses.replace(cfg.distill, kl_steps=0))
    module_wise = dlr_state(locked_copy(Run(RunPaths(tmp_path / "no-kl"), no_kl, quiet=True),
                                        no_kl, base, calibration, 8, "random"))  # fmt: skip
    assert any(not torch.equal(a[k], module_wise[k]) for k in a)


def test_a_dlr_state_that_does_not_match_the_model_is_refused():
    torch.manual_seed(0)
    base = GPT(GPTConfig(vocab_size=256, block_size=16, n_layer=2, n_head=2, d_model=32))
    inject(base, LockConfig(rank=8), seed=0)
    state = dlr_state(base)
    state.pop(next(iter(state)))
    with pytest.raises(ValueError, match="does not match"):
        load_dlr_state(base, state)
