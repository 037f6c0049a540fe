"""What a study is: a typed config, named presets, and run / report / validate functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from genlab.config import check_common
from genlab.executor import ExecutorConfig, map_tasks
from genlab.runs import Run, RunPaths

if TYPE_CHECKING:
    from genlab.report import Claim


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    config_cls: type
    presets: dict[str, Callable[[], Any]]
    """name -> a function returning that preset's config; ``smoke`` and ``paper`` always exist."""
    run: Callable[[Any, Run], dict]
    """Trains and logs into the run folder (resumably); returns the key numbers."""
    report: Callable[[RunPaths], None]
    """Rebuilds figures, report.md and report.html from the run folder's files alone."""
    validate: Callable[[Any], None]
    """Raises ConfigError naming the field for an invalid config, before any work."""
    claims: Callable[[RunPaths], list[Claim]] | None = None
    """The paper's claims beside the run's measurements, from the run folder's files alone
    (used by the report's claims table and by the index page); None: no published claim."""
    key_figure: str | None = None
    """The figure (a name under ``figures/``, without ``.png``) the index page shows."""

    def check(self, config: Any) -> None:
        """Every check before a run: the ones common to all configs (finite numbers, int64,
        seeds >= 0), then the study's own ``validate``."""
        check_common(config)
        self.validate(config)


def run_subruns(
    run: Run,
    tasks: list,
    name: Callable[[Any], str],
    fn: Callable[..., list[dict]],
    parallel: ExecutorConfig,
) -> None:
    """Run independent tasks (each trains in its own sub-run folder and returns its records)
    through the shared executor, and copy each finished task's records into ``run`` inside a
    stage named ``name(task)``. Tasks whose stage is done (on resume) are skipped.

    ``fn(task, extra_callbacks=...)`` is called with the run's extra callbacks when the
    executor is local (tests interrupt runs with them; other processes cannot receive them).
    Copies go in task order, whatever order the tasks finish in: then an interrupted copy is
    always the last stage in the file, and redoing it on resume (which truncates from its
    first record) never removes another task's records."""
    todo = [t for t in tasks if not run.stage_done(name(t))]
    finished: dict[int, list[dict]] = {}
    order = {id(t): i for i, t in enumerate(todo)}
    copied = [0]

    def copy_records(task: Any, records: list[dict]) -> None:
        finished[order[id(task)]] = records
        while copied[0] in finished:
            with run.stage(name(todo[copied[0]])):
                for r in finished.pop(copied[0]):
                    values = {k: v for k, v in r.items() if k not in ("step", "split", "stage")}
                    run.log(r["step"], r["split"], **values)
            copied[0] += 1

    extra = run.extra_callbacks if parallel.executor == "local" else None
    map_tasks(partial(fn, extra_callbacks=extra), todo, executor=parallel.executor,
              workers=parallel.workers, threads=parallel.threads,
              ray_address=parallel.ray_address, on_done=copy_records)  # fmt: skip
