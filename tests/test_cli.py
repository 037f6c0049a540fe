import os
import subprocess
import sys

import pytest

from genlab.cli import main


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "genlab.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "GENLAB_QUIET": "1"},
    )


def test_list_names_studies_and_presets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "classify" in out and "smoke" in out and "paper" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "nosuch"], "choose from classify"),
        (["run", "classify", "--preset", "huge"], "smoke, noisy, paper"),
        (["run", "classify", "--optim.lr", "-0.1"], "optim.lr"),
        (["run", "classify", "--data.label-noise", "1.5"], "data.label_noise"),
        (["run", "classify", "--data.name", "cifar10"], "data.name"),
        (["run", "classify", "--data.train-size", "0"], "data.train_size"),
        (["frobnicate"], "choose from list, run, report, demo"),
    ],
)
def test_bad_input_exits_2_naming_the_field(capsys, args, needle):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unknown_flag_exits_2_without_traceback():
    proc = run_cli("run", "classify", "--no-such-flag", "3")
    assert proc.returncode == 2
    assert "no-such-flag" in proc.stderr and "Traceback" not in proc.stderr


def test_help_lists_fields_with_defaults():
    proc = run_cli("run", "classify", "--help")
    assert proc.returncode == 0
    assert "--optim.lr" in proc.stdout and "default: 0.001" in proc.stdout
    assert "--resume" in proc.stdout


def test_run_then_report_rebuilds_from_files(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "classify", "--steps", "60", "--quiet", "--out", str(out)]) == 0
    (out / "report.md").unlink()
    (out / "figures" / "curves.png").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").exists() and (out / "figures" / "curves.png").exists()
    # A second run into the finished folder is refused, and the folder is intact.
    assert main(["run", "classify", "--steps", "60", "--quiet", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and (out / "summary.json").exists()


def test_corrupt_checkpoint_on_resume_exits_2(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "classify", "--steps", "60", "--quiet", "--out", str(out)]) == 0
    (out / "summary.json").unlink()  # pretend it was interrupted
    (out / "checkpoints" / "latest.json").write_text("{not json")
    assert main(["run", "classify", "--steps", "60", "--quiet", "--out", str(out), "--resume"]) == 2
    assert "corrupt" in capsys.readouterr().err
