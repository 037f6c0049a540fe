"""``genlab demo``: every study's smoke preset into one folder, with an index page (the front
page of the work: per study its key figure, the paper's claims beside the run's numbers, status,
wall time and a link to the full report; :func:`genlab.report.write_index`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from genlab.report import write_index
from genlab.runs import RunPaths, execute, to_jsonable


def run_demo(out: Path, quiet: bool = False) -> int:
    from genlab.studies import STUDIES

    runs, failed = [], 0
    for i, (name, study) in enumerate(STUDIES.items(), 1):
        config = study.presets["smoke"]()
        study.check(config)
        paths = RunPaths(out / name)
        if not quiet:
            print(f"[{i}/{len(STUDIES)}] {name}: smoke preset -> {paths.root}", flush=True)
        if _is_complete(paths, config):
            summary = json.loads(paths.summary.read_text())  # same config, already done
        else:
            try:
                summary = execute(study, config, paths.root, force=True, quiet=quiet)
            except Exception as e:  # one broken study must not hide the others' results
                summary = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
                print(f"demo: {name} failed: {summary['error']}", file=sys.stderr)
        failed += summary["status"] != "complete"
        runs.append(paths)
    index = write_index(out, runs, title="genlab demo: smoke presets")
    print(f"demo: {len(runs) - failed}/{len(runs)} studies complete -> {index}")
    return 1 if failed else 0


def _is_complete(paths: RunPaths, config) -> bool:
    try:
        summary = json.loads(paths.summary.read_text())
        same = json.loads(paths.config.read_text()) == to_jsonable(config)
    except (OSError, json.JSONDecodeError):
        return False
    return same and summary.get("status") == "complete"
