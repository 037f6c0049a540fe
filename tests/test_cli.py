import contextlib
import dataclasses
import io
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genlab.cli import main
from genlab.studies import STUDIES


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


def test_corrupt_checkpoints_on_resume_exit_2(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "classify", "--steps", "60", "--quiet", "--out", str(out)]) == 0
    (out / "summary.json").unlink()  # pretend it was interrupted
    for f in (out / "checkpoints" / "train").glob("*.safetensors"):
        f.write_text("{not a checkpoint")
    assert main(["run", "classify", "--steps", "60", "--quiet", "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no intact checkpoint" in err and len(err.strip().splitlines()) == 1


# --- bad input, tried systematically -------------------------------------------------------


def config_fields(config, prefix=""):
    """Dotted names of every field of a nested config (a list-valued field counts once)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield from config_fields(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


# wrong type, out of range, zero, and a float corner case (the empty string and huge floats are
# among the generated values below, which keeps this sweep over every field quick)
FIXED_VALUES = ["abc", "-1", "0", "nan"]
RANDOM_VALUES = st.one_of(
    st.sampled_from([*FIXED_VALUES, "", "1e308"]),
    st.text(max_size=12),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    # genlab flushes subnormals to zero on import (see genlab/__init__.py): none can be drawn
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False).map(repr),
)


def assert_exit_0_or_one_line(study: str, field: str, value: str) -> int:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["run", study, f"{flag(field)}={value}", "--check"])
    out, err = out.getvalue(), err.getvalue()
    if code == 0:
        assert out.startswith(f"{study}: config valid") and not err, (field, value, err)
    else:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, (field, value, code, err)
        assert lines[0].startswith("genlab: error: ") and "Traceback" not in err
    return code


@pytest.mark.parametrize("study", list(STUDIES))
def test_every_field_with_fixed_bad_values_exits_0_or_2_with_one_line(study):
    fields = list(config_fields(STUDIES[study].presets["smoke"]()))
    codes = [assert_exit_0_or_one_line(study, f, v) for f in fields for v in FIXED_VALUES]
    assert codes.count(2) > len(codes) // 2  # most of these values are rejected


@pytest.mark.parametrize("study", list(STUDIES))
@settings(max_examples=150, derandomize=True, database=None, deadline=None)
@given(data=st.data())
def test_every_field_with_generated_values_exits_0_or_2_with_one_line(study, data):
    field = data.draw(st.sampled_from(list(config_fields(STUDIES[study].presets["smoke"]()))))
    assert_exit_0_or_one_line(study, field, data.draw(RANDOM_VALUES))
