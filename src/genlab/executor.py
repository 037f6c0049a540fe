"""One way to run independent tasks, for every study: in this process, in a pool of processes,
or as Ray tasks on a local or remote Ray cluster.

A study's parallel part (the attention phase diagram's cells today; modes x seeds, pruning
chains and module distillations next) is a list of picklable tasks and a top-level function;
:func:`map_tasks` runs them and hands each result back as it finishes. Every task runs with
``threads`` intra-op torch threads whatever the executor, so a result does not depend on where
it ran: the local, process and Ray paths give the same numbers, bit for bit, on one machine.

Ray: with no instance running, ``map_tasks(..., executor="ray")`` starts a local one
(``ray.init(num_cpus=workers, include_dashboard=False)``) or connects to ``ray_address``
(``"auto"`` or ``"ray://host:10001"``). To use a cluster for any study, start Ray on it and
pass ``--parallel.executor ray --parallel.ray-address ADDRESS`` (a study's
:class:`ExecutorConfig`; or call ``ray.init(address=...)`` yourself before ``map_tasks``: an
initialized Ray is used as it is).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch

from genlab.errors import ConfigError, GenlabError

Executor = Literal["local", "process", "ray"]
EXECUTORS: tuple[str, ...] = ("local", "process", "ray")

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ExecutorConfig:
    """Where a study's parallel part runs (``parallel`` in its config): the arguments of
    :func:`map_tasks`."""

    executor: Executor = "process"
    """local: this process; process: a spawned process pool; ray: Ray tasks."""
    ray_address: str | None = None
    """executor=ray: the cluster address ("auto", "ray://host:10001"; None: a local Ray)."""
    workers: int | None = None
    """Worker processes or Ray CPUs (None: all cores)."""
    threads: int = 1
    """Intra-op torch threads per task."""

    def check(self, field: str = "parallel") -> None:
        """ConfigError naming ``field.executor`` / ``.workers`` / ``.threads``."""
        if self.executor not in EXECUTORS:
            raise ConfigError(
                f"{field}.executor", f"must be one of {', '.join(EXECUTORS)}, got {self.executor!r}"
            )
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"{field}.workers", f"must be >= 1 (or None), got {self.workers}")
        if self.threads < 1:
            raise ConfigError(f"{field}.threads", f"must be >= 1, got {self.threads}")


class RayUnavailable(GenlabError, ImportError):
    """executor="ray" without Ray installed."""


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def num_threads(k: int | None) -> Iterator[None]:
    """Temporarily ``torch.set_num_threads(k)`` (no-op for None). For loops of tiny ops, where
    intra-op threads only cost synchronisation, and for results that must not depend on the
    thread count (a reduction split over threads sums in another order)."""
    if k is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(k)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _call_with_threads(fn: Callable[[T], R], task: T, threads: int | None) -> R:
    """``fn(task)`` with ``threads`` intra-op threads, restored afterwards (local and Ray)."""
    with num_threads(threads):
        return fn(task)


def map_tasks(
    fn: Callable[[T], R],
    tasks: Sequence[T],
    *,
    executor: Executor = "local",
    workers: int | None = None,
    threads: int | None = 1,
    ray_address: str | None = None,
    on_done: Callable[[T, R], None] | None = None,
    mp_context: str = "spawn",
) -> list[R]:
    """``[fn(t) for t in tasks]`` computed by ``executor``; ``on_done(task, result)`` is called
    in this process as each task finishes (completion order), the list is in task order.

    ``"local"``: one after another in this process. ``"process"``: a ProcessPoolExecutor of
    ``workers`` processes (default ``os.cpu_count()``), start method ``mp_context`` (``"spawn"``:
    a script needs the ``if __name__ == "__main__":`` guard; ``fn`` must be importable).
    ``"ray"``: Ray tasks of one CPU each (see the module docstring for clusters)."""
    if executor not in EXECUTORS:
        raise ConfigError("executor", f"must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    results: list[Any] = [None] * len(tasks)

    def finished(i: int, result: R) -> None:
        results[i] = result
        if on_done is not None:
            on_done(tasks[i], result)

    if executor == "local" or not tasks:
        for i, task in enumerate(tasks):
            finished(i, _call_with_threads(fn, task, threads))
    elif executor == "process":
        n_workers = min(workers or os.cpu_count() or 1, len(tasks))
        with ProcessPoolExecutor(
            max_workers=n_workers,
            mp_context=mp.get_context(mp_context),
            initializer=_set_threads,
            initargs=(threads,),
        ) as pool:
            futures = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    else:
        ray = _ray(workers, ray_address)
        remote = ray.remote(num_cpus=1)(_call_with_threads)
        pending = {remote.remote(fn, task, threads): i for i, task in enumerate(tasks)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                finished(pending.pop(ref), ray.get(ref))
    return results


def _ray(workers: int | None, address: str | None):
    try:
        import ray
    except ImportError as err:
        raise RayUnavailable(
            "executor='ray' needs Ray, which is not installed: pip install ray "
            "(or pip install 'genlab[ray]')"
        ) from err
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=workers, include_dashboard=False)
    return ray
