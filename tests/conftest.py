import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from genlab.runs import RunPaths, execute
from genlab.studies import STUDIES

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    """``smoke_runs(name) -> (RunPaths, summary)``: the study's smoke preset, run once per test
    session and shared; a test that changes files in it works on a copy."""
    done: dict = {}

    def smoke_run(name: str):
        if name not in done:
            study, config = STUDIES[name], STUDIES[name].presets["smoke"]()
            study.check(config)
            root = tmp_path_factory.mktemp(name) / "smoke"
            done[name] = (RunPaths(root), execute(study, config, root, quiet=True))
        return done[name]

    return smoke_run


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Each test runs in its own folder so default run folders never collide."""
    monkeypatch.chdir(tmp_path)


# A child process that runs ``execute`` and SIGKILLs itself at one point of the run; used by
# the resume tests of every study.
KILL = """
import os, signal, sys
import genlab.runs as runs, genlab.train as train
from genlab.runs import RunPaths, execute
from genlab.studies import STUDIES
from genlab.studies import STUDIES
from genlab.train import Callback
study, where, at, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
exec(sys.argv[5])  # defines CONFIG
def die(*_):
    os.kill(os.getpid(), signal.SIGKILL)
extra = []
if where == "after_step":  # after the step's measurements and checkpoint
    extra = [Callback(die, [at])]
elif where == "before_checkpoint":  # measurements logged, checkpoint not written
    real_save = train.save_checkpoint
    train.save_checkpoint = lambda p, step, *a, **k: die() if step == at else real_save(p, step, *a, **k)
elif where == "mid_checkpoint":  # tensors written, the state file half written
    real_bytes = runs.atomic_write_bytes
    def half(path, data):
        if path.name == f"step-{at:09d}.pt":
            path.with_name(f".{path.name}.{os.getpid()}.tmp").write_bytes(data[: len(data) // 2])
            die()
        real_bytes(path, data)
    runs.atomic_write_bytes = half
elif where == "torn_metrics":  # half a line of the step's records on disk
    real_append = runs.MetricsLog.append
    def torn(self, step, split, **values):
        if step == at:
            with open(self.path, "a") as f:
                f.write('{"step": %d, "spl' % step)
            die()
        real_append(self, step, split, **values)
    runs.MetricsLog.append = torn
elif where == "records":  # just before the at-th record (from 0), whatever its split
    count = []
    real_append = runs.MetricsLog.append
    def counted(self, step, split, **values):
        count.append(step)
        if len(count) > at:
            die()
        real_append(self, step, split, **values)
    runs.MetricsLog.append = counted
elif where.startswith("record:"):  # just before the at-th record (from 0) of one split
    seen = []
    real_append = runs.MetricsLog.append
    def counted(self, step, split, **values):
        if split == where[7:]:
            seen.append(step)
            if len(seen) > at:
                die()
        real_append(self, step, split, **values)
    runs.MetricsLog.append = counted
elif where == "before_summary":  # training and report done, summary.json not written
    real_json = runs.atomic_write_json
    runs.atomic_write_json = lambda p, o: die() if p.name == "summary.json" else real_json(p, o)
execute(STUDIES[study], CONFIG, out, quiet=True, extra_callbacks=extra)
"""


@pytest.fixture
def kill_then_resume():
    """``kill_then_resume(study, config, config_code, where, at, root)``: run ``config_code``
    (which defines CONFIG) in a child that SIGKILLs itself at ``where``/``at``, then resume in
    this process; the caller compares metrics with an uninterrupted run."""

    def kill_then_resume(study, config, config_code, where, at, root: Path) -> None:
        proc = subprocess.run(
            [sys.executable, "-c", KILL, study.name, where, str(at), str(root), config_code],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert not (root / "summary.json").exists()
        assert execute(study, config, root, quiet=True, resume=True)["status"] == "complete"
        assert not list(root.rglob(".*.tmp"))  # temp files of the cut-short writes are gone

    return kill_then_resume


def _rounding_atol(f, h, n_terms: int) -> float:
    """Round-off allowed between two float32 evaluations of f(h) by different code paths (e.g.
    the full pass vs the cached last block). Moving every input one ulp (eps relative) measures
    how much f amplifies a rounding (LayerNorm, softmax); each path rounds reductions of
    n_terms terms in all, which add up like a random walk, ~sqrt(n_terms) ulps: 4 sigma,
    times sqrt(2) for two independent paths."""
    import torch  # here, not at the top: genlab sets MKL up before torch is first used

    eps32 = torch.finfo(torch.float32).eps
    sign = 2.0 * torch.randint(0, 2, h.shape, generator=torch.Generator().manual_seed(0)) - 1
    with torch.no_grad():
        a, b = f(h), f(h * (1 + eps32 * sign))
    per_ulp = max(float((a - b).abs().max()), eps32 * float(a.abs().max()))
    return 4 * math.sqrt(2 * n_terms) * per_ulp


@pytest.fixture
def rounding_atol():
    """:func:`_rounding_atol`: the round-off allowed between two float32 code paths."""
    return _rounding_atol
