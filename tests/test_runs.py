import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genlab import runs
from genlab.cli import main
from genlab.data import load_dataset
from genlab.errors import CheckpointError, RunExists
from genlab.runs import MetricsLog, RunPaths, execute, run_name
from genlab.studies import STUDIES
from genlab.studies.classify import ClassifyConfig, OptimConfig
from genlab.train import Callback

CLASSIFY = STUDIES["classify"]


def small(**kw) -> ClassifyConfig:
    cfg = ClassifyConfig(steps=300, measure_every=25, checkpoint_every=100, **kw)
    CLASSIFY.validate(cfg)
    return cfg


def test_run_folder_holds_every_file(tmp_path):
    summary = execute(CLASSIFY, small(), tmp_path / "r", quiet=True)
    paths = RunPaths(tmp_path / "r")
    assert summary["status"] == "complete"
    for f in (
        paths.config,
        paths.env,
        paths.metrics,
        paths.report_md,
        paths.report_html,
        paths.summary,
        paths.figure("curves"),
        *runs.checkpoint_files(paths.stage_checkpoints("train"), 300),
        paths.stage_marker("train"),
        paths.noisy_idx,
    ):
        assert f.exists(), f
    assert not paths.lock.exists()  # released at the end of the run
    env = json.loads(paths.env.read_text())
    assert env["seed"] == 0 and env["torch"].startswith("2.13")
    records = MetricsLog(paths.metrics).read()
    assert {r["split"] for r in records} == {"train", "test"}
    assert [r["step"] for r in records if r["split"] == "test"] == list(range(0, 301, 25))
    assert "data:image/png;base64" in paths.report_html.read_text()
    assert not list(tmp_path.rglob(".*tmp*"))  # atomic writes leave no temp files


class Interrupt(Exception):
    pass


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path):
    cfg = small()
    execute(CLASSIFY, cfg, tmp_path / "a", quiet=True)

    def boom(loop):
        raise Interrupt

    with pytest.raises(Interrupt):
        execute(
            CLASSIFY, cfg, tmp_path / "b", quiet=True, extra_callbacks=[Callback(boom, steps=[237])]
        )
    assert not (tmp_path / "b" / "metrics.jsonl").read_text().count('"step": 250')
    summary = execute(CLASSIFY, cfg, tmp_path / "b", quiet=True, resume=True)
    assert summary["status"] == "complete"
    a = (tmp_path / "a" / "metrics.jsonl").read_text()
    b = (tmp_path / "b" / "metrics.jsonl").read_text()
    assert a == b  # bit-identical metrics, not just close


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    execute(CLASSIFY, small(), tmp_path / "a", quiet=True)
    execute(CLASSIFY, small(), tmp_path / "b", quiet=True)
    assert (tmp_path / "a/metrics.jsonl").read_text() == (tmp_path / "b/metrics.jsonl").read_text()
    execute(CLASSIFY, small(seed=1), tmp_path / "c", quiet=True)
    assert (tmp_path / "a/metrics.jsonl").read_text() != (tmp_path / "c/metrics.jsonl").read_text()


def test_finished_run_is_not_overwritten_without_force(tmp_path):
    execute(CLASSIFY, small(), tmp_path / "r", quiet=True)
    before = (tmp_path / "r/metrics.jsonl").read_text()
    with pytest.raises(RunExists, match="--force"):
        execute(CLASSIFY, small(seed=3), tmp_path / "r", quiet=True)
    with pytest.raises(RunExists):
        execute(CLASSIFY, small(), tmp_path / "r", quiet=True, resume=True)
    assert (tmp_path / "r/metrics.jsonl").read_text() == before
    execute(CLASSIFY, small(seed=3), tmp_path / "r", quiet=True, force=True)
    assert (tmp_path / "r/metrics.jsonl").read_text() != before


def interrupted_at(step: int):
    return [Callback(lambda lp: (_ for _ in ()).throw(Interrupt), [step])]


def test_damaged_latest_checkpoint_falls_back_to_the_intact_one(tmp_path, capsys):
    cfg = small()
    execute(CLASSIFY, cfg, tmp_path / "a", quiet=True)
    with pytest.raises(Interrupt):
        execute(CLASSIFY, cfg, tmp_path / "r", quiet=True, extra_callbacks=interrupted_at(150))
    paths = RunPaths(tmp_path / "r")
    folder = paths.stage_checkpoints("train")
    assert runs.checkpoint_steps(folder) == [100, 0]
    tensors, _ = runs.checkpoint_files(folder, 100)
    tensors.write_bytes(tensors.read_bytes()[:100])  # truncated, as by a crash or full disk
    capsys.readouterr()
    assert execute(CLASSIFY, cfg, paths.root, quiet=True, resume=True)["status"] == "complete"
    warning = capsys.readouterr().err
    assert "step-000000100.safetensors: corrupt or truncated" in warning
    assert "resuming from the intact checkpoint at step 0" in warning
    assert paths.metrics.read_text() == (tmp_path / "a/metrics.jsonl").read_text()


def test_resume_with_every_checkpoint_damaged_is_an_error(tmp_path):
    with pytest.raises(Interrupt):
        execute(CLASSIFY, small(), tmp_path / "r", quiet=True, extra_callbacks=interrupted_at(150))
    before = (tmp_path / "r/metrics.jsonl").read_text()
    for f in (tmp_path / "r/checkpoints/train").glob("*.pt"):
        f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="no intact checkpoint.*corrupt or truncated"):
        execute(CLASSIFY, small(), tmp_path / "r", quiet=True, resume=True)
    assert (tmp_path / "r/metrics.jsonl").read_text() == before  # nothing lost


def test_nan_loss_marks_run_diverged_with_the_step(tmp_path):
    cfg = small(optim=OptimConfig(name="sgd", lr=1e4, momentum=0.0))
    cfg.loss = "mse_sum"
    summary = execute(CLASSIFY, cfg, tmp_path / "r", quiet=True)
    assert summary["status"] == "diverged" and summary["step"] >= 1
    saved = json.loads((tmp_path / "r/summary.json").read_text())
    assert saved["status"] == "diverged" and str(saved["step"]) in saved["error"]


def test_run_name_is_preset_plus_hash_of_changes():
    base = ClassifyConfig()
    assert run_name("smoke", base, ClassifyConfig()) == "smoke"
    changed = run_name("smoke", small(), ClassifyConfig())
    assert changed.startswith("smoke-") and changed != run_name("smoke", small(seed=2), base)


# --- --force never deletes what genlab did not write ---------------------------------------


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_force_refuses_a_folder_genlab_did_not_write(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("four years of work")
    for extra in ([], ["--force"], ["--resume"]):
        args = ["run", "classify", "--steps", "20", "--quiet", "--out", str(precious), *extra]
        assert main(args) == 2
        line = one_error_line(capsys)
        assert str(precious) in line and "genlab did not write" in line
    assert [p.name for p in precious.iterdir()] == ["thesis.txt"]
    assert (precious / "thesis.txt").read_text() == "four years of work"
    # A file given as the run folder is refused the same way.
    assert (
        main(["run", "classify", "--quiet", "--force", "--out", str(precious / "thesis.txt")]) == 2
    )
    assert "not a folder" in one_error_line(capsys)
    # A folder holding an env.json that is not genlab's (no study named) is not a run folder.
    (precious / "env.json").write_text('{"python": "3.11"}')
    assert main(["run", "classify", "--quiet", "--force", "--out", str(precious)]) == 2
    assert (precious / "thesis.txt").exists()


def test_an_empty_folder_is_used_as_is(tmp_path):
    (tmp_path / "empty").mkdir()
    assert execute(CLASSIFY, small(), tmp_path / "empty", quiet=True)["status"] == "complete"


def test_force_moves_the_old_run_aside_until_the_new_one_has_its_config(
    tmp_path, monkeypatch, capsys
):
    root = tmp_path / "r"
    execute(CLASSIFY, small(), root, quiet=True)
    old_metrics = (root / "metrics.jsonl").read_text()
    real_write_json = runs.atomic_write_json

    def crash_on_config(path, obj):
        if path.name == "config.json":
            raise Interrupt  # a crash after the old run was set aside, before the new config
        real_write_json(path, obj)

    monkeypatch.setattr(runs, "atomic_write_json", crash_on_config)
    with pytest.raises(Interrupt):
        execute(CLASSIFY, small(seed=3), root, quiet=True, force=True)
    (aside,) = tmp_path.glob(".r.replaced-by-*")
    assert sorted(p.name for p in root.iterdir()) == ["env.json"]
    assert (aside / "metrics.jsonl").read_text() == old_metrics  # the old run is whole
    assert (aside / "summary.json").exists()
    monkeypatch.setattr(runs, "atomic_write_json", real_write_json)
    # The next command undoes the replacement that never took effect: the old run is back.
    with pytest.raises(RunExists, match="finished run"):
        execute(CLASSIFY, small(seed=3), root, quiet=True)
    assert "interrupted --force was undone" in capsys.readouterr().err
    assert (root / "metrics.jsonl").read_text() == old_metrics
    assert not list(tmp_path.glob(".r.replaced-by-*"))
    # A --force that finishes deletes the old run and leaves nothing aside.
    execute(CLASSIFY, small(seed=3), root, quiet=True, force=True)
    assert not list(tmp_path.glob(".r.replaced-by-*"))
    assert (root / "metrics.jsonl").read_text() != old_metrics
    assert json.loads((root / "config.json").read_text())["seed"] == 3


def test_an_old_run_left_aside_after_the_new_config_is_deleted_next_time(tmp_path, monkeypatch):
    root = tmp_path / "r"
    execute(CLASSIFY, small(), root, quiet=True)

    def die(path, *a, **k):
        raise Interrupt  # killed after the new config, before the old run was deleted

    monkeypatch.setattr(runs.shutil, "rmtree", die)
    with pytest.raises(Interrupt):
        execute(CLASSIFY, small(seed=3), root, quiet=True, force=True)
    assert len(list(tmp_path.glob(".r.replaced-by-*"))) == 1
    monkeypatch.undo()
    # The replacement took effect (the new run has its config): resuming it finishes the job.
    assert execute(CLASSIFY, small(seed=3), root, quiet=True, resume=True)["status"] == "complete"
    assert not list(tmp_path.glob(".r.replaced-by-*"))


# --- one process per run folder ------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from pathlib import Path
from genlab.runs import RunLock
RunLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def refused_while_another_process_holds_the_lock(root, capsys) -> int:
    """A second process holds the lock of ``root`` while ``genlab run`` tries it: refused,
    naming the holder. The holder is then SIGKILLed (its lock file stays, naming a dead
    process); returns its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(RunPaths(root).lock)], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        assert main(["run", "classify", "--steps", "20", "--quiet", "--out", str(root)]) == 2
        assert f"being written by process {holder.pid}" in one_error_line(capsys)
    finally:
        holder.kill()
        holder.wait()
    return holder.pid


def test_a_second_process_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    root = tmp_path / "r"
    root.mkdir()
    pid = refused_while_another_process_holds_the_lock(root, capsys)
    assert RunPaths(root).lock.read_text().strip() == str(pid)
    assert main(["run", "classify", "--steps", "20", "--quiet", "--out", str(root)]) == 0
    assert f"taking over the lock of process {pid}" in capsys.readouterr().err
    assert not RunPaths(root).lock.exists()
    # Also in a folder that already holds a run, the holder is named (not "pass --resume").
    refused_while_another_process_holds_the_lock(root, capsys)
    assert main(["run", "classify", "--steps", "20", "--quiet", "--out", str(root)]) == 2
    err = capsys.readouterr().err  # the lock is taken over (a warning), then the run refused
    assert "taking over the lock" in err and "already holds a finished run" in err


# --- hard kills at any point, then --resume ------------------------------------------------

CLASSIFY_SMALL = (
    "from genlab.studies.classify import ClassifyConfig\n"
    "CONFIG = ClassifyConfig(steps=300, measure_every=25, checkpoint_every=100)"
)


@pytest.fixture(scope="module")
def uninterrupted_classify(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("uninterrupted") / "r"
    execute(CLASSIFY, small(), root, quiet=True)
    return (root / "metrics.jsonl").read_text()


@pytest.mark.parametrize(
    ("where", "at"),
    [
        ("after_step", 50),  # the newest checkpoint is the step-0 one
        ("after_step", 0),
        ("before_checkpoint", 100),
        ("mid_checkpoint", 200),
        ("torn_metrics", 225),
        ("before_summary", 300),
    ],
)
def test_sigkill_anywhere_then_resume_equals_uninterrupted(
    tmp_path, where, at, uninterrupted_classify, kill_then_resume
):
    kill_then_resume(CLASSIFY, small(), CLASSIFY_SMALL, where, at, tmp_path / "r")
    assert (tmp_path / "r/metrics.jsonl").read_text() == uninterrupted_classify


# --- read-only or full disk ----------------------------------------------------------------

FULL_DISK = """
import resource, signal, sys
from genlab.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.exit(main(sys.argv[2:]))
"""


def test_full_disk_is_one_line_and_leaves_the_run_resumable(tmp_path, uninterrupted_classify):
    root = tmp_path / "r"
    load_dataset("digits")  # the dataset cache is written before the limit applies
    args = ["run", "classify", "--steps", "300", "--measure-every", "25"]
    args += ["--checkpoint-every", "100", "--quiet", "--out", str(root)]
    # Files may not grow past 150 kB: the first checkpoint's 237 kB state file cannot be written.
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, "150000", *args], capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "File too large" in line and "resumable" in line
    assert not (root / "summary.json").exists()  # nothing claims to be complete
    assert not list(root.rglob(".*.tmp"))
    assert main([*args, "--resume"]) == 0
    assert (root / "metrics.jsonl").read_text() == uninterrupted_classify


def test_read_only_run_folder_is_one_line_and_changes_nothing(tmp_path, monkeypatch, capsys):
    root = tmp_path / "r"
    with pytest.raises(Interrupt):
        execute(CLASSIFY, small(), root, quiet=True, extra_callbacks=interrupted_at(150))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # as on a file system mounted read-only
        if Path(path).is_relative_to(root) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    args = ["run", "classify", "--steps", "300", "--measure-every", "25"]
    assert (
        main([*args, "--checkpoint-every", "100", "--quiet", "--out", str(root), "--resume"]) == 2
    )
    line = one_error_line(capsys)
    assert "Read-only file system" in line and str(root) in line
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
