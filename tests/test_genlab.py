"""What importing genlab sets up for every study (genlab/__init__.py)."""

import os
import subprocess
import sys


def _mkl_verbose_line(env_extra: dict[str, str]) -> str:
    """The first MKL_VERBOSE line of a matrix product in a fresh process that imports genlab."""
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "MKL_VERBOSE")}
    env.update(env_extra, MKL_VERBOSE="1")
    code = "import genlab, torch\na = torch.ones(64, 64, dtype=torch.float64)\na @ a\n"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    return next(line for line in out.splitlines() if "GEMM(" in line)


def test_import_turns_on_mkl_reproducibility_and_fixes_its_threads():
    # CNR mode and a fixed thread count are MKL's two conditions for equal results from one
    # process to the next (a resumed run is a new process).
    line = _mkl_verbose_line({})
    assert "CNR:AUTO " in line, line
    assert "Dyn:0" in line, line


def test_a_users_own_mkl_setting_wins():
    assert "CNR:COMPATIBLE " in _mkl_verbose_line({"MKL_CBWR": "COMPATIBLE"})
