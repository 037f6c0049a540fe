"""``genlab demo``: every study's smoke preset into one folder, with an index page."""

from __future__ import annotations

import html
import json
from pathlib import Path

from genlab.runs import RunPaths, atomic_write_text, execute, to_jsonable


def run_demo(out: Path, quiet: bool = False) -> int:
    from genlab.studies import STUDIES

    rows, failed = [], 0
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
        failed += summary["status"] != "complete"
        rows.append((name, study.description, summary["status"]))
    items = "".join(
        f"<tr><td><a href='{n}/report.html'>{n}</a></td><td>{html.escape(d)}</td><td>{s}</td></tr>"
        for n, d, s in rows
    )
    atomic_write_text(
        out / "index.html",
        (
            "<!doctype html><html><head><meta charset='utf-8'><title>genlab demo</title></head>"
            "<body><h1>genlab demo: smoke presets</h1><table border=1 cellpadding=4>"
            f"<tr><th>study</th><th>what</th><th>status</th></tr>{items}</table></body></html>\n"
        ),
    )
    print(f"demo: {len(rows) - failed}/{len(rows)} studies complete -> {out / 'index.html'}")
    return 1 if failed else 0


def _is_complete(paths: RunPaths, config) -> bool:
    try:
        summary = json.loads(paths.summary.read_text())
        same = json.loads(paths.config.read_text()) == to_jsonable(config)
    except (OSError, json.JSONDecodeError):
        return False
    return same and summary.get("status") == "complete"
