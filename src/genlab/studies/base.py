"""What a study is: a typed config, named presets, and run / report / validate functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genlab.config import check_common
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
