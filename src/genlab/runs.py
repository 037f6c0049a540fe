"""Run folders: one place that names every output file, atomic writes, append-only metrics,
checkpoints that resume exactly, and the driver that turns a study + config into a finished run.

Layout of ``runs/STUDY/NAME/``::

    env.json         the study's name (the marker that makes this a genlab run folder), versions
    config.json      full resolved config            run.lock      held while a process writes here
    metrics.jsonl    one JSON object per line        noisy_idx.json training indices relabelled
    checkpoints/     step-XXXXXXXXX.safetensors (tensors) + .pt (optimizer, RNG, ...), newest 2
    figures/*.png    report.md, report.html          summary.json  written last: status, key numbers

genlab deletes only what it wrote: ``--force`` replaces a folder whose ``env.json`` names a
study, never any other non-empty folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from genlab.errors import (
    CheckpointError,
    ConfigError,
    GenlabError,
    RunBusy,
    RunExists,
    RunWriteError,
    warn,
)


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
    def lock(self) -> Path:
        return self.root / "run.lock"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def stage_checkpoints(self, stage: str) -> Path:
        """``checkpoints/STAGE/``: the stage's checkpoints, newest two."""
        return self.checkpoints / stage

    def stage_marker(self, name: str) -> Path:
        """``stages/NAME.json``: where the stage's records begin, and whether it finished."""
        return self.root / "stages" / f"{name}.json"

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
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: no torn temp file left behind
        raise


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


def from_jsonable(cls: Any, data: Any) -> Any:
    """The inverse of :func:`to_jsonable` for a typed config: a ``cls`` instance from JSON data
    (nested dataclasses, tuples and lists of them, floats written as strings when not finite).
    A field the data lacks keeps its default; a key the class lacks is a ConfigError."""
    import types
    import typing

    origin, args = typing.get_origin(cls), typing.get_args(cls)
    if dataclasses.is_dataclass(cls) and isinstance(data, dict):
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(sorted(unknown)[0], f"not a field of {cls.__name__}")
        return cls(**{k: from_jsonable(hints[k], v) for k, v in data.items()})
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        kinds = [a for a in args if a is not type(None)]
        return from_jsonable(kinds[0], data) if len(kinds) == 1 else data
    if origin is tuple and isinstance(data, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], v) for v in data)
        return tuple(from_jsonable(a, v) for a, v in zip(args, data))
    if origin is list and isinstance(data, list):
        return [from_jsonable(args[0], v) for v in data]
    if cls is float and isinstance(data, str | int):
        return float(data)
    return data


def read_config(paths: RunPaths, config_cls: type) -> Any:
    """The run's typed config, read back from ``config.json``."""
    return from_jsonable(config_cls, read_json(paths.config))


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

    def sync(self) -> None:
        """Flush the records to disk (before a checkpoint that claims them, so that a power
        loss cannot keep the checkpoint and lose the records)."""
        if self.path.exists():
            with open(self.path, "rb") as f:
                os.fsync(f.fileno())

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

    def truncate(self, first: int, through_step: int | None = None) -> None:
        """Keep the first ``first`` records and, of the later ones, those logged at steps up to
        ``through_step`` (none if None): how a stage resumed from its checkpoint at that step
        (or redone from its start) forgets what its interrupted attempt logged after it."""
        records = self.read()
        kept = records[:first]
        if through_step is not None:
            kept += [r for r in records[first:] if r["step"] <= through_step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))


def series(records: Iterable[dict], split: str, **context: Any) -> dict[str, np.ndarray]:
    """The one reader of metrics records: key -> array over the records of ``split`` whose
    context keys equal ``context`` (e.g. ``member="a8-wd0.1-s42"``), in logged order.

    Numbers become float arrays, with NaN where a record lacks the key or holds None (a
    measure logged on a coarser schedule); lists become 2-D arrays (one row per record);
    strings (``split``, ``stage``, context keys) are left out."""
    rows = [
        r
        for r in records
        if r.get("split") == split and all(r.get(k) == v for k, v in context.items())
    ]
    keys: dict[str, None] = {}  # first-seen order
    for r in rows:
        for k, v in r.items():
            if isinstance(v, int | float | list) and not isinstance(v, bool):
                keys.setdefault(k)
    return {
        k: np.array([np.nan if r.get(k) is None else r[k] for r in rows], dtype=float) for k in keys
    }


def metric_series(records: Iterable[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` in the records of ``split`` that have it."""
    s = series([r for r in records if r.get(key) is not None], split)
    return s.get("step", np.array([])).astype(int).tolist(), s.get(key, np.array([])).tolist()


# --- checkpoints ---------------------------------------------------------------------------


def checkpoint_files(folder: Path, step: int) -> tuple[Path, Path]:
    """(tensors, state) files of the checkpoint at ``step`` in ``folder``."""
    stem = folder / f"step-{step:09d}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".pt")


def checkpoint_steps(folder: Path) -> list[int]:
    """Steps that have a checkpoint file in ``folder``, newest first (intact or not)."""
    steps = set()
    for p in folder.glob("step-*.*"):
        if p.suffix in (".safetensors", ".pt") and p.stem[5:].isdigit():
            steps.add(int(p.stem[5:]))
    return sorted(steps, reverse=True)


def save_checkpoint(
    folder: Path, step: int, tensors: dict[str, torch.Tensor], state: Any, keep: int = 2
) -> None:
    """Tensors as safetensors, everything else (optimizer, RNG, counters) as a torch file that
    loads with ``weights_only=True``; both written atomically (fsync, rename), the state file
    last, so a checkpoint whose two files load is complete. The newest ``keep`` are kept: one to
    fall back on if the newest is damaged."""
    tensor_file, state_file = checkpoint_files(folder, step)
    atomic_write_safetensors(tensor_file, tensors)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(state_file, buffer.getvalue())
    for old in checkpoint_steps(folder)[keep:]:
        for p in checkpoint_files(folder, old):
            p.unlink(missing_ok=True)


def _read_checkpoint(folder: Path, step: int) -> tuple[dict[str, torch.Tensor], Any]:
    tensor_file, state_file = checkpoint_files(folder, step)
    try:
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{tensor_file}: corrupt or truncated checkpoint ({e})") from None
    try:
        state = torch.load(state_file, weights_only=True)
    except Exception as e:  # torch raises several types for a bad zip/pickle stream
        raise CheckpointError(f"{state_file}: corrupt or truncated checkpoint ({e})") from None
    return tensors, state


@dataclass(frozen=True)
class Checkpoint:
    step: int
    tensors: dict[str, torch.Tensor]
    state: Any


def load_checkpoint(folder: Path) -> Checkpoint | None:
    """The newest intact checkpoint in ``folder``, or None if there is none.

    An incomplete newer checkpoint (a write cut short) or a damaged one (truncated or corrupted
    on disk) is skipped with a warning that names it and the step resumed from; CheckpointError
    when checkpoints exist but none of the complete ones is intact."""
    damaged: list[str] = []
    for step in checkpoint_steps(folder):
        if not all(p.exists() for p in checkpoint_files(folder, step)):
            # a write cut short: the state file is written last, and only then is it complete
            warn(f"{folder}: the checkpoint at step {step} was never completed")
            continue
        try:
            tensors, state = _read_checkpoint(folder, step)
        except CheckpointError as e:
            damaged.append(str(e))
            continue
        if damaged:
            warn(f"{damaged[0]}; resuming from the intact checkpoint at step {step}")
        return Checkpoint(step, tensors, state)
    if damaged:
        raise CheckpointError(f"no intact checkpoint to resume from: {damaged[0]}")
    return None


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
class Stage:
    """The stage a run is in: its name, its checkpoint folder, and (on resume) the newest
    intact checkpoint it continues from."""

    name: str
    checkpoints: Path
    resume_from: Checkpoint | None = None


@dataclass
class Run:
    """What a study's ``run`` function gets: the paths, the metrics log, and run options.

    A run is a sequence of stages (``with run.stage(name):``): a training loop, a pruning
    level, an attention part. Records logged inside a stage carry ``stage``: every record has
    ``step``, ``split``, ``stage``, then context keys (``member``, ``layer``, ...) and values."""

    paths: RunPaths
    config: Any
    resume: bool = False
    quiet: bool = False
    extra_callbacks: list = field(default_factory=list)
    """Callbacks added to every training loop of the run (tests interrupt runs with these)."""
    current_stage: Stage | None = None

    def __post_init__(self):
        self.metrics = MetricsLog(self.paths.metrics)

    def log(self, step: int, split: str, **values: Any) -> None:
        if self.current_stage is None:  # only a stage knows what to drop when it resumes
            raise RuntimeError(f"{split} record logged outside a stage")
        self.metrics.append(step, split, stage=self.current_stage.name, **values)

    def stage_done(self, name: str) -> bool:
        """Whether stage ``name`` finished in an earlier attempt of this run (only on resume)."""
        marker = self.paths.stage_marker(name)
        return self.resume and marker.exists() and bool(read_json(marker).get("done"))

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        """A part of the run with its own checkpoints (``checkpoints/NAME/``) and a marker
        (``stages/NAME.json``: where its records begin, whether it finished, its wall time).

        On resume, an unfinished stage continues from its newest intact checkpoint, and one
        without a checkpoint starts over: either way the records its interrupted attempt
        logged after that point are dropped first, so a hard kill anywhere leaves no
        duplicate. A loop inside the stage picks up ``stage.resume_from``."""
        if self.current_stage is not None:
            raise RuntimeError(f"stage {name!r} inside stage {self.current_stage.name!r}")
        marker, stage = (
            self.paths.stage_marker(name),
            Stage(name, self.paths.stage_checkpoints(name)),
        )
        if self.resume and marker.exists():
            first = int(read_json(marker)["first_record"])
            stage.resume_from = load_checkpoint(stage.checkpoints)
            through = stage.resume_from.step if stage.resume_from else None
            self.metrics.truncate(first, through)
        else:
            first = len(self.metrics.read())
            shutil.rmtree(stage.checkpoints, ignore_errors=True)  # none from another attempt
        self.metrics.sync()
        atomic_write_json(marker, {"first_record": first, "done": False})
        start = time.perf_counter()
        self.current_stage = stage
        try:
            yield stage
        finally:
            self.current_stage = None
        self.metrics.sync()
        wall_s = round(time.perf_counter() - start, 3)  # kept out of the (reproducible) metrics
        atomic_write_json(marker, {"first_record": first, "done": True, "wall_s": wall_s})


class Diverged(Exception):
    def __init__(self, step: int, loss: float):
        self.step, self.loss = step, loss
        super().__init__(f"loss became {loss} at step {step}")

    def __reduce__(self):  # so a worker process can hand it back (Exception pickles args only)
        return (Diverged, (self.step, self.loss))


# --- the run folder's owner: marker, lock, replacement ---------------------------------------


def run_folder_study(root: Path) -> str | None:
    """The study named by ``root/env.json`` if ``root`` is a genlab run folder, else None."""
    try:
        env = json.loads(RunPaths(root).env.read_text())
    except (OSError, ValueError):
        return None
    study = env.get("study") if isinstance(env, dict) else None
    return study if isinstance(study, str) and study else None


def folder_state(root: Path) -> str:
    """``missing``, ``empty`` (nothing but a lock file left by a killed run), ``run`` (a genlab
    run folder) or ``foreign`` (anything else: a file, or a folder genlab did not write)."""
    if not root.exists() and not root.is_symlink():
        return "missing"
    if not root.is_dir():
        return "foreign"
    entries = [p.name for p in root.iterdir()]
    if not entries or entries == [RunPaths(root).lock.name]:
        return "empty"
    return "run" if run_folder_study(root) else "foreign"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive right to write one run folder, held for the run's life.

    ``run.lock`` holds the owner's pid under an ``flock``. The kernel drops an flock when its
    process dies, however it dies (SIGKILL, power loss), so a lock left by a dead process is
    taken over with a warning instead of blocking the folder forever; a live holder makes the
    second process stop with RunBusy naming its pid."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunBusy(
                    f"{self.path.parent} is being written by process {holder} "
                    f"(lock {self.path}): wait for it to finish or stop it"
                ) from None
            try:  # the previous holder may have unlinked the file between our open and flock
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        previous = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if previous and previous != str(os.getpid()):
            warn(f"{self.path}: taking over the lock of process {previous}, which no longer runs")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:  # unlink only our own file (a replaced run's lock has moved with its folder)
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


ASIDE = ".{name}.replaced-by-{pid}"


def _finish_replacements(root: Path) -> None:
    """Finish what an earlier ``--force`` left when it died (it moved the old run aside to
    ``.NAME.replaced-by-PID`` first): if the new run got its config, the old one is deleted;
    if not, the replacement is undone and the old run restored, with a warning."""
    pattern = ASIDE.format(name=root.name, pid="*")
    for aside in sorted(root.parent.glob(pattern)):
        pid = aside.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue  # that replacement is still under way
        if RunPaths(root).config.exists():
            shutil.rmtree(aside)
            continue
        leftovers = [p.name for p in root.iterdir()] if root.is_dir() else []
        if all(n in ("env.json", "run.lock") or n.endswith(".tmp") for n in leftovers):
            shutil.rmtree(root, ignore_errors=True)
            os.rename(aside, root)
            warn(f"an interrupted --force was undone: {root} holds the previous run again")
        else:
            warn(f"an interrupted --force left the run it was replacing in {aside}")


def _remove_temp_files(paths: RunPaths) -> None:
    """Temp files of atomic writes cut short by a kill (we hold the lock: nobody else writes)."""
    folders = [paths.root, paths.figures, paths.stage_marker("x").parent, paths.checkpoints]
    folders += [p for p in paths.checkpoints.glob("*") if p.is_dir()]
    for folder in folders:
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                p.unlink(missing_ok=True)


# Errors of the file system, not of genlab: reported as one line, and the run stays resumable.
DISK_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG}


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

    ``run_dir`` must be missing, empty, or a genlab run folder. A finished run is never
    overwritten without ``force``; an unfinished one needs ``resume`` (continue) or ``force``
    (start over). ``force`` moves the old run aside and deletes it only once the new run has
    its config. One process at a time holds a run folder (``run.lock``). A read-only or full
    disk raises RunWriteError and leaves the run resumable. ``summary.json`` is written last.
    """
    paths = RunPaths(Path(run_dir))
    try:
        return _execute(study, config, paths, resume, force, quiet, extra_callbacks or [])
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        where = e.filename or paths.root
        raise RunWriteError(
            f"cannot write {where}: {e.strerror}; the run folder is left resumable"
        ) from None


def _execute(study, config, paths: RunPaths, resume, force, quiet, extra_callbacks) -> dict:
    root = paths.root
    _finish_replacements(root)
    state = folder_state(root)
    if state == "foreign":
        kind = "a folder that genlab did not write" if root.is_dir() else "not a folder"
        raise RunExists(
            f"{root}: {kind} (no env.json naming a study); genlab writes only into a new or "
            "empty folder or its own run folder, and --force never deletes anything else"
        )
    # Take the lock before judging the folder: a run another process is writing is reported
    # as such (with its pid), not as an unfinished run to resume or overwrite.
    root.mkdir(parents=True, exist_ok=True)
    lock = RunLock(paths.lock).acquire()
    try:
        _check_replace_or_resume(study, config, paths, state, resume, force)
        aside = None
        if state == "run" and force:
            aside = root.with_name(ASIDE.format(name=root.name, pid=os.getpid()))
            os.rename(root, aside)  # the old run stays whole until the new one has its config
            root.mkdir()
            new_lock = RunLock(paths.lock).acquire()
            lock.release()  # the old lock's file moved aside with the old run
            lock = new_lock
        _remove_temp_files(paths)
        atomic_write_json(
            paths.env, {"study": study.name, **env_info(getattr(config, "seed", None))}
        )
        atomic_write_json(paths.config, to_jsonable(config))
        if aside is not None:
            shutil.rmtree(aside)
        paths.summary.unlink(missing_ok=True)
        resume = resume and state == "run" and not force
        run = Run(paths, config, resume=resume, quiet=quiet, extra_callbacks=extra_callbacks)
        return _run_and_summarize(study, config, run)
    finally:
        lock.release()


def _check_replace_or_resume(study, config, paths: RunPaths, state, resume, force) -> None:
    """Refuse what would lose or mix results: a finished run without --force, an unfinished one
    without --resume or --force, another study's run, a different config on resume."""
    root = paths.root
    if state != "run" or force:
        return
    done = paths.summary.exists()
    if not resume:
        raise RunExists(
            f"{root} already holds a {'finished' if done else 'unfinished'} run: "
            f"pass --force to overwrite it{'' if done else ' or --resume to continue it'}"
        )
    if done and read_json(paths.summary).get("status") == "complete":
        raise RunExists(f"{root} is already complete: pass --force to run it again")
    if run_folder_study(root) != study.name:
        raise RunExists(f"{root} holds a {run_folder_study(root)} run, not {study.name}")
    if paths.config.exists() and read_json(paths.config) != to_jsonable(config):
        raise ConfigError("config", f"differs from the one in {paths.config}; cannot resume")


def _run_and_summarize(study, config, run: Run) -> dict:
    paths = run.paths
    start = time.perf_counter()
    try:
        results = study.run(config, run)
        status = {"status": "complete"}
    except Diverged as e:
        results, status = {}, {"status": "diverged", "step": e.step, "error": str(e)}
    except (GenlabError, KeyboardInterrupt):
        raise  # bad input or an interrupt: no summary, the run stays resumable
    except Exception as e:
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            raise  # a full or read-only disk: no summary, the run stays resumable
        atomic_write_json(paths.summary, {"status": "failed", "error": f"{type(e).__name__}: {e}"})
        raise
    study.report(paths)
    wall_s = round(time.perf_counter() - start, 3)  # of this attempt (a resumed run: the rest)
    summary = {**status, "study": study.name, "wall_s": wall_s, "results": results}
    atomic_write_json(paths.summary, summary)
    return summary


StudyRun = Callable[[Any, Run], dict]
