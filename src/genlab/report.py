"""Reports: ``report.md`` (what was run, key numbers, figures, the paper's claim beside the run's
measurement) and a self-contained ``report.html`` with the figures embedded."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import markdown

from genlab.runs import RunPaths, atomic_write_text


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def config_block(paths: RunPaths) -> str:
    return "```json\n" + paths.config.read_text().strip() + "\n```"


def figure_md(paths: RunPaths, name: str, caption: str) -> str:
    return f"![{caption}](figures/{name}.png)\n\n*{caption}*"


def write_report(paths: RunPaths, title: str, sections: Sequence[tuple[str, str]]) -> None:
    """Write report.md from (heading, markdown body) sections, then report.html from it."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.strip(), ""]
    text = "\n".join(parts)
    atomic_write_text(paths.report_md, text)
    atomic_write_text(paths.report_html, render_html(text, paths.root, title))


HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;
line-height:1.45}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em}
img{max-width:100%}pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:.85em}"""


def render_html(md_text: str, root: Path, title: str) -> str:
    """Markdown to one HTML file; images under ``root`` are inlined as data URIs."""
    body = markdown.markdown(md_text, extensions=["tables", "fenced_code"])

    def inline(match: re.Match) -> str:
        src = root / match.group(1)
        if not src.exists():
            return match.group(0)
        data = base64.b64encode(src.read_bytes()).decode()
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{HTML_STYLE}</style></head><body>{body}</body></html>\n"
    )


def read_summary(paths: RunPaths) -> dict:
    return json.loads(paths.summary.read_text()) if paths.summary.exists() else {}


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def pyplot():
    """matplotlib.pyplot with the non-interactive backend (no display on these machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
