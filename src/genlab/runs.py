"""Run folders: one place that names every output file, atomic writes, append-only metrics,
checkpoints that resume exactly, and the driver that turns a study + config into a finished run.

Layout of ``runs/STUDY/NAME/``::

    config.json      full resolved config            env.json      versions, threads, seed, commit
    metrics.jsonl    one JSON object per line        noisy_idx.json training indices relabelled
    checkpoints/     step-XXXXXXXXX.safetensors (tensors) + .pt (optimizer, RNG, ...) + latest.json
    figures/*.png    report.md, report.html          summary.json  written last: status, key numbers
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from genlab.errors import CheckpointError, ConfigError, GenlabError, RunExists


@dataclass(frozen=True)
class RunPaths:
    """Every file a run writes, named once."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def env(self) -> Path:
        return self.root / "env.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def noisy_idx(self) -> Path:
        return self.root / "noisy_idx.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def latest_checkpoint(self) -> Path:
        return self.checkpoints / "latest.json"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def figure(self, name: str) -> Path:
        return self.figures / f"{name}.png"

    def artifact(self, name: str) -> Path:
        """A study-specific extra file at the top of the run folder."""
        return self.root / name


# --- atomic writes -------------------------------------------------------------------------


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Tensors as one safetensors file, written atomically (parent folders created)."""
    contiguous = {k: v.detach().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, safetensors_bytes(contiguous))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise GenlabError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise GenlabError(f"{path}: not valid JSON ({e})") from None


# --- metrics -------------------------------------------------------------------------------


class MetricsLog:
    """Append-only JSON lines; every record has ``step`` and ``split``."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, step: int, split: str, **values: Any) -> None:
        record = {"step": int(step), "split": split, **to_jsonable(values)}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line from a crash: everything before it is good
        return records

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (they are recomputed when a run resumes)."""
        kept = [r for r in self.read() if r["step"] <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def metric_series(records: Iterable[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` in the records of ``split``, in logged order."""
    steps, values = [], []
    for r in records:
        if r.get("split") == split and key in r and r[key] is not None:
            steps.append(r["step"])
            values.append(float(r[key]))
    return steps, values


# --- checkpoints ---------------------------------------------------------------------------


def save_checkpoint(
    paths: RunPaths, step: int, tensors: dict[str, torch.Tensor], state: Any, keep: int = 2
) -> None:
    """Tensors as safetensors, everything else (optimizer, RNG, counters) as a torch file that
    loads with ``weights_only=True``; ``latest.json`` is switched last, atomically."""
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    stem = f"step-{step:09d}"
    atomic_write_safetensors(paths.checkpoints / f"{stem}.safetensors", tensors)
    tmp = paths.checkpoints / f".{stem}.tmp.pt"
    torch.save(state, tmp)
    os.replace(tmp, paths.checkpoints / f"{stem}.pt")
    atomic_write_json(paths.latest_checkpoint, {"step": step, "stem": stem})
    old = sorted(p for p in paths.checkpoints.glob("step-*.safetensors"))[:-keep]
    for p in old:
        p.unlink(missing_ok=True)
        p.with_suffix(".pt").unlink(missing_ok=True)


def load_checkpoint(paths: RunPaths) -> tuple[int, dict[str, torch.Tensor], Any] | None:
    """The latest checkpoint, or None if the run has none; CheckpointError if it is damaged."""
    if not paths.latest_checkpoint.exists():
        return None
    try:
        latest = json.loads(paths.latest_checkpoint.read_text())
        stem, step = latest["stem"], int(latest["step"])
    except (json.JSONDecodeError, KeyError, ValueError) as e:
        raise CheckpointError(
            f"{paths.latest_checkpoint}: corrupt checkpoint index ({e})"
        ) from None
    tensor_file = paths.checkpoints / f"{stem}.safetensors"
    state_file = paths.checkpoints / f"{stem}.pt"
    try:
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{tensor_file}: corrupt or truncated checkpoint ({e})") from None
    try:
        state = torch.load(state_file, weights_only=True)
    except Exception as e:  # torch raises several types for a bad zip/pickle stream
        raise CheckpointError(f"{state_file}: corrupt or truncated checkpoint ({e})") from None
    return step, tensors, state


# --- environment and names -----------------------------------------------------------------


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def env_info(seed: int | None) -> dict:
    import numpy

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
        "flush_denormal": True,  # set on import of genlab (genlab/__init__.py)
        "seed": seed,
        "git_commit": git_commit(),
        "start_time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def run_name(preset: str, config: Any, preset_config: Any) -> str:
    """``preset`` plus a short hash of the values that differ from the preset, if any."""
    changed = {
        k: v
        for k, v in flatten(to_jsonable(config)).items()
        if flatten(to_jsonable(preset_config)).get(k) != v
    }
    if not changed:
        return preset
    digest = hashlib.sha1(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:6]
    return f"{preset}-{digest}"


# --- the run -------------------------------------------------------------------------------


@dataclass
class Run:
    """What a study's ``run`` function gets: the paths, the metrics log, and run options."""

    paths: RunPaths
    config: Any
    resume: bool = False
    quiet: bool = False
    extra_callbacks: list = field(default_factory=list)
    """Callbacks added to every training loop of the run (tests interrupt runs with these)."""

    def __post_init__(self):
        self.metrics = MetricsLog(self.paths.metrics)

    def log(self, step: int, split: str, **values: Any) -> None:
        self.metrics.append(step, split, **values)


class Diverged(Exception):
    def __init__(self, step: int, loss: float):
        self.step, self.loss = step, loss
        super().__init__(f"loss became {loss} at step {step}")


def execute(
    study: Any,
    config: Any,
    run_dir: Path,
    *,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    extra_callbacks: list | None = None,
) -> dict:
    """Run ``study`` with ``config`` into ``run_dir`` and write its report and summary.

    A finished run is never overwritten without ``force``; an unfinished one needs ``resume``
    (continue) or ``force`` (start over). ``summary.json`` is written last.
    """
    paths = RunPaths(Path(run_dir))
    if paths.root.exists() and any(paths.root.iterdir()):
        if force:
            shutil.rmtree(paths.root)
        elif not resume:
            done = paths.summary.exists()
            raise RunExists(
                f"{paths.root} already holds a {'finished' if done else 'unfinished'} run: "
                f"pass --force to overwrite it{'' if done else ' or --resume to continue it'}"
            )
        elif paths.summary.exists() and read_json(paths.summary).get("status") == "complete":
            raise RunExists(f"{paths.root} is already complete: pass --force to run it again")
    config_json = to_jsonable(config)
    if resume and paths.config.exists() and read_json(paths.config) != config_json:
        raise ConfigError("config", f"differs from the one in {paths.config}; cannot resume")
    paths.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(paths.config, config_json)
    atomic_write_json(paths.env, {"study": study.name, **env_info(getattr(config, "seed", None))})
    paths.summary.unlink(missing_ok=True)
    run = Run(paths, config, resume=resume, quiet=quiet, extra_callbacks=extra_callbacks or [])
    try:
        results = study.run(config, run)
        status = {"status": "complete"}
    except Diverged as e:
        results, status = {}, {"status": "diverged", "step": e.step, "error": str(e)}
    except (GenlabError, KeyboardInterrupt):
        raise  # bad input or an interrupt: no summary, the run stays resumable
    except Exception as e:
        atomic_write_json(paths.summary, {"status": "failed", "error": f"{type(e).__name__}: {e}"})
        raise
    study.report(paths)
    summary = {**status, "study": study.name, "results": results}
    atomic_write_json(paths.summary, summary)
    return summary


StudyRun = Callable[[Any, Run], dict]
