"""Reports: ``report.md`` (what was run, key numbers, figures, the paper's claim beside the run's
measurement), a self-contained ``report.html`` with the figures embedded, and ``index.html``: a
front page for a folder of runs (:func:`write_index`).

Numbers a reader reads go through :func:`pct` (accuracies, rates), :func:`sig` (losses, ratios:
3 significant digits) and :func:`count` (steps, sizes: integers with thousands separators);
:func:`fmt` (4 significant digits) stays for names built from numbers (run names, group keys).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import markdown

from genlab.runs import RunPaths, atomic_write_text, run_folder_study

# --- numbers -------------------------------------------------------------------------------


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def count(v: Any) -> str:
    """A count (steps, samples) as an integer with thousands separators: ``12,000``; a count
    that is not whole (a median of two steps) keeps one decimal; None -> ``n/a``."""
    if v is None:
        return "n/a"
    x = float(v)
    if not math.isfinite(x):
        return "n/a"
    if x == int(x):
        return f"{int(x):,}"
    return f"{x:,.1f}"


def sig(v: Any, digits: int = 3) -> str:
    """A measured number to ``digits`` significant digits, trailing zeros dropped: ``0.452``,
    ``7.3``, ``0.000479``, ``12,300``; exponent form only below 1e-4 or from 1e9 (``4.79e-5``).
    Integers are counts (:func:`count`); None -> ``n/a``."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return count(v)
    x = float(v)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    rounded = float(f"{x:.{digits}g}")
    mag = math.floor(math.log10(abs(rounded)))
    if mag < -4 or mag >= 9:
        mant, exp = f"{rounded:.{digits - 1}e}".split("e")
        mant = mant.rstrip("0").rstrip(".") if "." in mant else mant
        return f"{mant}e{int(exp)}"
    if mag >= digits - 1:
        return f"{round(rounded):,}"
    text = f"{rounded:.{digits - 1 - mag}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def pct(v: Any, decimals: int = 1) -> str:
    """A fraction (accuracy, error rate) as a percentage: ``0.937 -> 93.7%``, ``1.0 -> 100.0%``;
    a nonzero value that would round to 0 keeps 2 significant digits (``0.048%``)."""
    if v is None:
        return "n/a"
    x = 100 * float(v)
    if not math.isfinite(x):
        return "n/a"
    if x != 0 and abs(x) < 0.5 * 10**-decimals:
        return f"{sig(x, 2)}%"
    return f"{x:.{decimals}f}%"


def duration(seconds: Any) -> str:
    """Wall time for a reader: ``15.6 s``, ``2 min 05 s``, ``1 h 02 min``."""
    if seconds is None:
        return "n/a"
    s = float(seconds)
    if s < 60:
        return f"{sig(s)} s"
    s = round(s)
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s // 60 % 60:02d} min"


# --- markdown ------------------------------------------------------------------------------


def _cell(v: Any) -> str:
    """One table cell: numbers formatted for a reader, ``|`` escaped, one line."""
    if v is None or isinstance(v, (bool, int, float)):
        text = sig(v)
    else:
        text = str(v)
    return re.sub(r"(?<!\\)\|", r"\\|", text.replace("\n", " "))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table. Strings are kept as they are (format numbers with :func:`pct`,
    :func:`sig` or :func:`count` first where it matters); other numbers get :func:`sig`.
    ``|`` inside a cell is escaped."""
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def config_block(paths: RunPaths) -> str:
    return "```json\n" + paths.config.read_text().strip() + "\n```"


def figure_md(paths: RunPaths, name: str, caption: str) -> str:
    return f"![{caption}](figures/{name}.png)\n\n*{caption}*"


_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r" {0,3}(?:[-*+]|\d{1,9}[.)]) +\S")
_HEADING = re.compile(r" {0,3}#{1,6}(?:\s|$)")
_TABLE_SEP = re.compile(r" {0,3}\|? *:?-+:? *(?:\| *:?-+:? *)*\|? *$")


def _is_table_sep(line: str) -> bool:
    return "|" in line and bool(_TABLE_SEP.match(line))


def normalize_markdown(md: str) -> str:
    """Insert the blank lines python-markdown needs: before a table, a list or a heading that
    follows a paragraph line (else they are run into the paragraph), and after a table (else
    the next line becomes a row). Fenced code is left alone; well-formed markdown is
    returned unchanged."""
    lines = md.split("\n")
    out: list[str] = []
    prev = "blank"  # kind of the previous line: blank, para, list, table, heading, code
    fence = None
    for i, line in enumerate(lines):
        if fence is not None:
            out.append(line)
            if line.strip().startswith(fence):
                fence, prev = None, "code"
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        m = _FENCE.match(line)
        if not line.strip():
            kind = "blank"
        elif m:
            kind = "code"
        elif prev == "table" and "|" in line and not _HEADING.match(line):
            kind = "table"
        elif "|" in line and _is_table_sep(nxt):
            kind = "table"
        elif _LIST_ITEM.match(line):
            kind = "list"
        elif _HEADING.match(line):
            kind = "heading"
        elif prev == "list":
            kind = "list"  # an item's continuation line (lazy or indented)
        else:
            kind = "para"
        if kind != "blank" and prev != "blank" and kind != prev:
            if kind in ("table", "list", "heading", "code") or prev in ("table", "code"):
                out.append("")
        out.append(line)
        if m:
            fence = m.group(1)[0] * 3
            prev = "code"
        else:
            prev = kind
    return "\n".join(out)


def write_report(paths: RunPaths, title: str, sections: Sequence[tuple[str, str]]) -> None:
    """Write report.md from (heading, markdown body) sections, then report.html from it."""
    parts = [f"# {title}", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.strip(), ""]
    text = normalize_markdown("\n".join(parts))
    atomic_write_text(paths.report_md, text)
    atomic_write_text(paths.report_html, render_html(text, paths.root, title))


HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;
line-height:1.45;color:#222}table{border-collapse:collapse;margin:.8em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;vertical-align:top}th{background:#f3f3f3;
text-align:left}img{max-width:100%}pre{background:#f6f6f6;padding:.6em;overflow:auto;
font-size:.85em}code{background:#f6f6f6;padding:0 .2em}pre code{padding:0}
h2{border-bottom:1px solid #ddd;padding-bottom:.15em;margin-top:1.6em}
.verdict{display:inline-block;padding:0 .4em;border-radius:.3em;white-space:nowrap;
font-size:.9em}.held{background:#dcf2df;color:#14532d}.not-held{background:#fbe0de;
color:#7f1d1d}.not-tested{background:#ececec;color:#444}"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def render_html(md_text: str, root: Path, title: str) -> str:
    """Markdown to one HTML file; images under ``root`` are inlined as data URIs."""
    body = markdown.markdown(
        normalize_markdown(md_text), extensions=["tables", "fenced_code", "sane_lists"]
    )

    def inline(match: re.Match) -> str:
        src = root / match.group(1)
        if not src.exists():
            return match.group(0)
        return f'src="{_data_uri(src)}"'

    body = re.sub(r'src="([^"]+\.png)"', inline, body)
    verdicts = "|".join(re.escape(v) for v in VERDICTS)  # a claims table's verdict cell
    body = re.sub(
        rf"<td><strong>({verdicts})</strong></td>",
        lambda m: f"<td>{_verdict_html(m.group(1))}</td>",
        body,
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{HTML_STYLE}</style></head><body>{body}</body></html>\n"
    )


def read_summary(paths: RunPaths) -> dict:
    return json.loads(paths.summary.read_text()) if paths.summary.exists() else {}


# --- claims --------------------------------------------------------------------------------

VERDICTS = ("held", "not held", "not tested at this scale")
_VERDICT_CLASS = {"held": "held", "not held": "not-held", "not tested at this scale": "not-tested"}


@dataclass(frozen=True)
class Claim:
    """One published claim beside this run: what is claimed, the paper's value (quoted with
    its source), the run's measured value, and the verdict (one of :data:`VERDICTS`)."""

    claim: str
    paper: str
    measured: str
    verdict: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: choose from {', '.join(VERDICTS)}")


def claims_table(claims: Sequence[Claim]) -> str:
    """The claims as a markdown table (claim, paper, this run, verdict)."""
    if not claims:
        return "No published claim was tested in this run."
    return table(
        ["claim", "paper", "this run", "verdict"],
        [[c.claim, c.paper, c.measured, f"**{c.verdict}**"] for c in claims],
    )


# --- index: a front page for a folder of runs ----------------------------------------------

INDEX_STYLE = """.muted{color:#666;font-size:.9em}.status-complete{color:#14532d;font-weight:600}
.status-other{color:#7f1d1d;font-weight:600}
.thumb{display:block;max-width:100%;max-height:260px;border:1px solid #ddd;margin:.6em 0}
.run{margin-top:2.2em}.run h2 a{text-decoration:none}table.claims td:nth-child(4){width:9em}"""


KEY_NUMBERS = (
    ("test_acc", "final test accuracy", pct),
    ("train_acc", "final train accuracy", pct),
    ("test_loss", "final test loss", sig),
    ("step", "steps", count),
)
"""Shown on the index for a study without claims: (key in summary ``results``, label, format)."""


def find_runs(folder: Path) -> list[RunPaths]:
    """Run folders under ``folder`` (itself included), sorted: folders whose ``env.json`` names
    a registered study. Hidden folders (a run moved aside by ``--force``) are skipped."""
    from genlab.studies import STUDIES

    folder = Path(folder)
    found = []
    for env in sorted(folder.rglob("env.json")):
        root = env.parent
        if any(part.startswith(".") for part in root.relative_to(folder).parts):
            continue
        if run_folder_study(root) in STUDIES:
            found.append(RunPaths(root))
    return found


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _inline_md(text: str) -> str:
    """A claim's text as inline HTML: escaped, with markdown's ``**bold**``, ``*italic*`` and
    backtick code spans."""
    out = _esc(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", out)


def _verdict_html(verdict: str) -> str:
    return f"<span class='verdict {_VERDICT_CLASS[verdict]}'>{_esc(verdict)}</span>"


def _key_figure(paths: RunPaths, name: str | None) -> Path | None:
    if name and paths.figure(name).exists():
        return paths.figure(name)
    pngs = sorted(paths.figures.glob("*.png")) if paths.figures.is_dir() else []
    return pngs[0] if pngs else None


def _run_entry(folder: Path, paths: RunPaths) -> dict:
    """What the index shows of one run, from its folder alone."""
    from genlab.studies import STUDIES

    name = run_folder_study(paths.root)
    study = STUDIES.get(name)
    try:
        summary = read_summary(paths)
    except (OSError, ValueError):
        summary = {}
    entry: dict[str, Any] = {
        "study": name or paths.root.name,
        "description": study.description if study else "",
        "where": Path(os.path.relpath(paths.root, folder)).as_posix(),
        "report": (
            Path(os.path.relpath(paths.report_html, folder)).as_posix()
            if paths.report_html.exists()
            else None
        ),
        "status": summary.get("status", "incomplete" if name else "not a run folder (no env.json)"),
        "error": summary.get("error"),
        "wall_s": summary.get("wall_s"),
        "figure": _key_figure(paths, study.key_figure if study else None),
        "claims": None,
        "claims_error": None,
        "key_numbers": [],
    }
    if study is not None and study.claims is not None:
        try:
            entry["claims"] = study.claims(paths)
        except Exception as e:  # an unfinished run may lack what its claims need
            entry["claims_error"] = f"{type(e).__name__}: {e}"
    results = summary.get("results") if isinstance(summary.get("results"), dict) else {}
    for key, label, form in KEY_NUMBERS:
        if isinstance(results.get(key), (int, float)):
            entry["key_numbers"].append((label, form(results[key])))
    return entry


def _verdict_counts(claims: Sequence[Claim] | None) -> str:
    if not claims:
        return ""
    parts = []
    for v in VERDICTS:
        n = sum(c.verdict == v for c in claims)
        if n:
            parts.append(f"{_verdict_html(v)}&nbsp;×{n}")
    return " ".join(parts)


def _overview_note(e: dict) -> str:
    """The overview table's last cell: verdict counts, or the first key number."""
    if e["claims"]:
        return _verdict_counts(e["claims"])
    return ", ".join(f"{_esc(k)} {_esc(v)}" for k, v in e["key_numbers"][:1])


def _entry_html(e: dict) -> str:
    title = _esc(e["study"] or "unknown study")
    if e["report"]:
        title = f"<a href='{_esc(e['report'])}'>{title}</a>"
    ok = e["status"] == "complete"
    status = (
        f"<span class='status-{'complete' if ok else 'other'}'>{_esc(e['status'])}</span>"
        f" &middot; wall time {_esc(duration(e['wall_s']))}"
    )
    parts = [
        f"<section class='run'><h2>{title}</h2>",
        f"<p>{_esc(e['description'])}</p>" if e["description"] else "",
        f"<p>Status: {status} &middot; run folder <code>{_esc(e['where'])}/</code></p>",
    ]
    if e["error"]:
        parts.append(f"<p class='muted'>Error: <code>{_esc(e['error'])}</code></p>")
    if e["figure"] is not None:
        img = (
            f"<img class='thumb' src='{_data_uri(e['figure'])}' "
            f"alt='{_esc(e['figure'].stem)}' title='{_esc(e['figure'].name)}'>"
        )
        parts.append(f"<a href='{_esc(e['report'])}'>{img}</a>" if e["report"] else img)
    if e["claims"]:
        rows = "".join(
            f"<tr><td>{_inline_md(c.claim)}</td><td>{_inline_md(c.paper)}</td>"
            f"<td>{_inline_md(c.measured)}</td><td>{_verdict_html(c.verdict)}</td></tr>"
            for c in e["claims"]
        )
        parts.append(
            "<table class='claims'><tr><th>claim</th><th>paper</th><th>this run</th>"
            f"<th>verdict</th></tr>{rows}</table>"
        )
    elif e["claims_error"]:
        parts.append(f"<p class='muted'>Claims not available: {_esc(e['claims_error'])}</p>")
    elif e["key_numbers"]:
        rows = "".join(
            f"<tr><td>{_esc(label)}</td><td>{_esc(value)}</td></tr>"
            for label, value in e["key_numbers"]
        )
        parts.append(
            "<p>No published claim to compare; key numbers of the last measurement:</p>"
            f"<table><tr><th>measure</th><th>value</th></tr>{rows}</table>"
        )
    if e["report"]:
        parts.append(f"<p><a href='{_esc(e['report'])}'>Full report &rarr;</a></p>")
    else:
        parts.append("<p class='muted'>No report.html in this run folder.</p>")
    parts.append("</section>")
    return "".join(parts)


def index_html(folder: Path, runs: Sequence[RunPaths], title: str = "genlab runs") -> str:
    """The front page of the runs ``runs`` (paths under ``folder``): an overview table, then
    per run its key figure, its claims (or key numbers), status, wall time and report link."""
    entries = [_run_entry(Path(folder), p) for p in runs]
    overview = "".join(
        f"<tr><td>{_esc(e['study'])}</td><td>"
        + (
            f"<a href='{_esc(e['report'])}'>{_esc(e['where'])}</a>"
            if e["report"]
            else _esc(e["where"])
        )
        + f"</td><td>{_esc(e['status'])}</td><td>{_esc(duration(e['wall_s']))}</td>"
        f"<td>{_overview_note(e)}</td></tr>"
        for e in entries
    )
    complete = sum(e["status"] == "complete" for e in entries)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>"
        f"<style>{HTML_STYLE}\n{INDEX_STYLE}</style></head><body><h1>{_esc(title)}</h1>"
        f"<p>{len(entries)} run{'s' if len(entries) != 1 else ''}, {complete} complete. Each "
        "published claim is set beside the run's measurement with a verdict: "
        f"{_verdict_html('held')}, {_verdict_html('not held')} or "
        f"{_verdict_html('not tested at this scale')} (the run is too small or too short "
        "to say).</p>"
        "<table><tr><th>study</th><th>run</th><th>status</th><th>wall time</th>"
        f"<th>claims / key number</th></tr>{overview}</table>"
        + "".join(_entry_html(e) for e in entries)
        + "</body></html>\n"
    )


def write_index(folder: Path, runs: Sequence[RunPaths], title: str = "genlab runs") -> Path:
    """Write ``folder/index.html`` for ``runs`` (see :func:`index_html`); returns its path."""
    out = Path(folder) / "index.html"
    atomic_write_text(out, index_html(folder, runs, title))
    return out


# --- figures -------------------------------------------------------------------------------


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
