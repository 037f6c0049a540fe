"""The contract every registered study keeps; a new study gets these checks by being in STUDIES.

- ``smoke`` and ``paper`` presets exist and pass ``Study.check``;
- the smoke run completes, and its report (markdown, HTML, figures) rebuilds byte-identically
  from the run folder alone;
- a smoke run killed (SIGKILL) halfway through its records and resumed logs exactly the
  records of the uninterrupted run;
- bad input exits 2 with one line naming what is wrong.
"""

import shutil

import pytest

from genlab.cli import main
from genlab.config import config_values
from genlab.runs import MetricsLog
from genlab.studies import STUDIES


@pytest.mark.parametrize("name", list(STUDIES))
def test_smoke_and_paper_presets_exist_and_validate(name):
    study = STUDIES[name]
    assert {"smoke", "paper"} <= set(study.presets)
    for preset in study.presets.values():
        study.check(preset())


@pytest.mark.parametrize("name", list(STUDIES))
def test_smoke_run_completes_and_its_report_rebuilds_byte_identically(name, smoke_runs, tmp_path):
    paths, summary = smoke_runs(name)
    assert summary["status"] == "complete"
    assert MetricsLog(paths.metrics).read(), "a run logs records"
    copy = tmp_path / "copy"
    shutil.copytree(paths.root, copy)
    written = [paths.report_md, paths.report_html, *sorted(paths.figures.glob("*.png"))]
    for f in written:
        (copy / f.relative_to(paths.root)).unlink()
    assert main(["report", str(copy)]) == 0
    for f in written:
        assert (copy / f.relative_to(paths.root)).read_bytes() == f.read_bytes(), f.name


@pytest.mark.parametrize("name", list(STUDIES))
def test_smoke_run_killed_halfway_and_resumed_equals_uninterrupted(
    name, smoke_runs, tmp_path, kill_then_resume
):
    paths, _ = smoke_runs(name)
    half = len(MetricsLog(paths.metrics).read()) // 2
    code = f"from genlab.studies import STUDIES\nCONFIG = STUDIES[{name!r}].presets['smoke']()"
    study = STUDIES[name]
    kill_then_resume(study, study.presets["smoke"](), code, "records", half, tmp_path / "r")
    assert (tmp_path / "r/metrics.jsonl").read_bytes() == paths.metrics.read_bytes()


def first_int_field(config) -> str:
    return next(
        name
        for name, value in config_values(config)
        if type(value) is int and "[" not in name  # a scalar int field, not a list item
    )


@pytest.mark.parametrize("name", list(STUDIES))
@pytest.mark.parametrize("bad", ["preset", "unknown field", "wrong type"])
def test_bad_input_exits_2_with_one_line(name, bad, capsys):
    field = "--" + first_int_field(STUDIES[name].presets["smoke"]()).replace("_", "-")
    args, needle = {
        "preset": (["--preset", "no-such-preset"], "--preset"),
        "unknown field": (["--no-such-field", "1"], "no-such-field"),
        "wrong type": ([field, "abc"], field),
    }[bad]
    assert main(["run", name, *args, "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genlab: error:") and needle in err[0], err
