"""Reports a reader trusts: number formatters, markdown that renders as written (tables and lists
are never run into a paragraph), the claims table, and the index page for a folder of runs."""

import base64
import re
import shutil
from html.parser import HTMLParser

import pytest

from genlab.cli import main
from genlab.report import (
    VERDICTS,
    Claim,
    claims_table,
    count,
    duration,
    find_runs,
    normalize_markdown,
    pct,
    render_html,
    sig,
    table,
    write_index,
)
from genlab.runs import RunPaths, read_json
from genlab.studies import STUDIES

# --- an HTML reader ------------------------------------------------------------------------


class Page(HTMLParser):
    """What a browser would show: text nodes (with the tags they sit in), images, headings,
    tables, links and the cells of every table."""

    VOID = {"img", "br", "hr", "meta", "link", "input"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.texts: list[tuple[str, tuple[str, ...]]] = []
        self.imgs: list[dict] = []
        self.links: list[str] = []
        self.tags: dict[str, int] = {}
        self.tables: list[list[list[str]]] = []  # table -> row -> cell texts
        self.headings: list[tuple[str, str]] = []
        self.spans: list[tuple[str, str]] = []  # (class, text)
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None
        self._span: tuple[str, list[str]] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "img":
            self.imgs.append(a)
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "table":
            self.tables.append([])
        if tag == "tr" and self.tables:
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []
        if re.fullmatch(r"h[1-6]", tag):
            self._heading = []
        if tag == "span" and "class" in a:
            self._span = (a["class"], [])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        if re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            self.headings.append((tag, "".join(self._heading).strip()))
            self._heading = None
        if tag == "span" and self._span is not None:
            self.spans.append((self._span[0], "".join(self._span[1])))
            self._span = None
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        self.texts.append((data, tuple(self.stack)))
        for buf in (self._cell, self._heading, self._span and self._span[1]):
            if buf is not None and buf is not False:
                buf.append(data)

    def prose(self) -> list[str]:
        """Text nodes outside <pre>, <code>, <style> and <title>."""
        skip = {"pre", "code", "style", "title"}
        return [t for t, tags in self.texts if not skip & set(tags)]


RAW_ROW = re.compile(r"(?m)^\s*\|[^|\n]+\|[^|\n]+\|")  # | a | b |
RAW_SEPARATOR = re.compile(r"(?m)^\s*\|?\s*:?-{3,}:?\s*\|")  # |---|
RAW_LIST = re.compile(r"(?m)^\s*(?:[-*+]|\d+[.)])\s+\S")  # - item, * item, 1. item


def raw_markdown(page: Page) -> list[str]:
    """Text nodes that still show markdown syntax: a table row, a list item, bold markers."""
    return [
        t
        for t in page.prose()
        if RAW_ROW.search(t) or RAW_SEPARATOR.search(t) or RAW_LIST.search(t) or "**" in t
    ]


def outside_fences(md: str) -> list[str]:
    lines, fenced = [], False
    for line in md.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


# --- numbers -------------------------------------------------------------------------------


def test_pct_reads_fractions_as_percentages():
    assert pct(0.937) == "93.7%"
    assert pct(0.9166667) == "91.7%"
    assert pct(0.65) == "65.0%"
    assert pct(1.0) == "100.0%" and pct(0) == "0.0%"
    assert pct(0.0004786979) == "0.048%"  # nonzero: never shown as 0.0%
    assert pct(None) == "n/a" and pct(float("nan")) == "n/a"


def test_sig_gives_three_significant_digits_without_noise():
    assert sig(0.0004786979415988511) == "0.000479"
    assert sig(0.45217) == "0.452"
    assert sig(7.3033) == "7.3"
    assert sig(1.0) == "1" and sig(0.99996) == "1" and sig(0.0) == "0"
    assert sig(288.0) == "288" and sig(999.7) == "1,000"
    assert sig(12345.6) == "12,300"
    assert sig(-0.012345) == "-0.0123"
    assert sig(4.7e-7) == "4.7e-7" and sig(2.5e12) == "2.5e12"
    assert sig(0.61356, 2) == "0.61"
    assert sig(12000) == "12,000"  # an int is a count: exact
    assert sig(None) == "n/a" and sig(float("inf")) == "inf"


def test_count_and_duration():
    assert count(12000) == "12,000" and count(70.0) == "70" and count(952.5) == "952.5"
    assert count(905) == "905" and count(None) == "n/a"
    assert duration(15.585) == "15.6 s"
    assert duration(125.2) == "2 min 05 s"
    assert duration(3720) == "1 h 02 min"
    assert duration(None) == "n/a"


def test_table_formats_numbers_and_escapes_pipes(tmp_path):
    md = table(["setting", "||mu||", "loss", "steps"], [["a|b", 15.0, 0.45217, 12000]])
    assert md.splitlines()[0] == r"| setting | \|\|mu\|\| | loss | steps |"
    assert md.splitlines()[2] == r"| a\|b | 15 | 0.452 | 12,000 |"
    page = Page(render_html(md, tmp_path, "t"))
    assert page.tables == [
        [["setting", "||mu||", "loss", "steps"], ["a|b", "15", "0.452", "12,000"]]
    ]


# --- markdown normalisation ----------------------------------------------------------------

NORMALISED = [
    (  # a list right after a paragraph line (the grokking claims list before this fix)
        "This run:\n- alpha=1: held.\n- lambda: not tested.",
        "This run:\n\n- alpha=1: held.\n- lambda: not tested.",
    ),
    (  # an ordered list
        "Steps:\n1. train\n2. measure",
        "Steps:\n\n1. train\n2. measure",
    ),
    (  # a table right after a paragraph line, and a paragraph line right after a table
        "Intro line.\n| a | b |\n|---|---|\n| 1 | 2 |\nAfter the table.",
        "Intro line.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nAfter the table.",
    ),
    (  # a table right after a list
        "- item\n| a | b |\n|---|---|\n| 1 | 2 |",
        "- item\n\n| a | b |\n|---|---|\n| 1 | 2 |",
    ),
    (  # a heading and a fence right after paragraph lines
        "text\n## Heading\ntext\n```json\n{}\n```\nmore",
        "text\n\n## Heading\ntext\n\n```json\n{}\n```\n\nmore",
    ),
]

UNCHANGED = [
    "Para one.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nPara two.",
    "- a\n  continued\n- b\nlazy continuation of b",
    "```\ntext\n- not a list\n| a | b |\n|---|---|\n```",  # fenced code is left alone
    "*train fit at*: emphasis, not a list.\n**bold** neither.",
    "A sentence with a | pipe in it.\nAnd a second line.",
]


@pytest.mark.parametrize(("md", "expected"), NORMALISED)
def test_normalize_markdown_inserts_the_blank_lines_markdown_needs(md, expected):
    assert normalize_markdown(md) == expected
    assert normalize_markdown(expected) == expected  # idempotent


@pytest.mark.parametrize("md", UNCHANGED)
def test_normalize_markdown_leaves_well_formed_markdown_alone(md):
    assert normalize_markdown(md) == md


def test_rendered_html_has_the_list_and_table_not_their_source(tmp_path):
    md = "Intro:\n- first\n- second\nText.\n| a | b |\n|---|---|\n| 1 | 2 |\nAfter."
    page = Page(render_html(md, tmp_path, "t"))
    assert page.tags.get("ul") == 1 and page.tags.get("li") == 2
    assert page.tables == [[["a", "b"], ["1", "2"]]]
    assert raw_markdown(page) == []
    assert any("After." in t for t in page.prose())


# --- claims --------------------------------------------------------------------------------


def test_claim_verdict_is_one_of_three():
    assert VERDICTS == ("held", "not held", "not tested at this scale")
    with pytest.raises(ValueError, match="verdict"):
        Claim("c", "p", "m", "reproduced")


def test_claims_table_renders_one_row_per_claim_with_verdict_badges(tmp_path):
    claims = [
        Claim("A regime exists", "Fig. 3", "benign in ||mu|| = 15", "held"),
        Claim("Onset ~ 1/lambda", "k about -1", "k = -0.4", "not held"),
        Claim("RNC1 together", "same time", "no rise", "not tested at this scale"),
    ]
    md = claims_table(claims)
    page = Page(render_html("Intro line.\n" + md, tmp_path, "t"))
    (rows,) = page.tables
    assert rows[0] == ["claim", "paper", "this run", "verdict"]
    assert [r[2] for r in rows[1:]] == ["benign in ||mu|| = 15", "k = -0.4", "no rise"]
    assert [r[3] for r in rows[1:]] == list(VERDICTS)
    assert page.spans == [
        ("verdict held", "held"),
        ("verdict not-held", "not held"),
        ("verdict not-tested", "not tested at this scale"),
    ]
    assert raw_markdown(page) == []
    assert claims_table([]) == "No published claim was tested in this run."


# --- every study's smoke report, read as a browser reads it --------------------------------


@pytest.mark.parametrize("name", list(STUDIES))
def test_smoke_report_html_shows_no_raw_markdown(name, smoke_runs):
    paths, summary = smoke_runs(name)
    assert summary["status"] == "complete"
    md = paths.report_md.read_text()
    page = Page(paths.report_html.read_text())
    assert raw_markdown(page) == [], "markdown shown as text in report.html"
    lines = outside_fences(md)
    # Headings and tables exist where the markdown has them.
    assert [h for h in page.headings if h[0] == "h1"] == [("h1", lines[0][2:])]
    assert [t for tag, t in page.headings if tag == "h2"] == [
        line[3:] for line in lines if line.startswith("## ")
    ]
    separators = [line for line in lines if re.fullmatch(r"\|(---\|)+", line)]
    assert len(page.tables) == len(separators) > 0
    for rows in page.tables:
        assert len({len(r) for r in rows}) == 1, rows  # no row split by a stray pipe
    # Every figure is inlined, one <img> per markdown image.
    assert len(page.imgs) == sum(line.startswith("![") for line in lines) > 0
    for img in page.imgs:
        assert img["src"].startswith("data:image/png;base64,"), img["src"][:60]
    for line in lines:
        if line.startswith("!["):
            src = re.search(r"\]\((figures/[^)]+\.png)\)", line).group(1)
            data = base64.b64encode((paths.root / src).read_bytes()).decode()
            assert any(img["src"].endswith(data) for img in page.imgs), src


@pytest.mark.parametrize("name", [n for n in STUDIES if STUDIES[n].claims is not None])
def test_report_claims_table_is_the_studys_claims(name, smoke_runs):
    """The report's claims section and the index use one function: every claim it returns is
    a row of the report's claims table, verdict included."""
    paths, _ = smoke_runs(name)
    claims = STUDIES[name].claims(paths)
    assert claims and all(c.verdict in VERDICTS for c in claims)
    page = Page(paths.report_html.read_text())
    claim_tables = [t for t in page.tables if t[0] == ["claim", "paper", "this run", "verdict"]]
    assert len(claim_tables) == 1
    assert claim_tables[0][1:] == [[c.claim, c.paper, c.measured, c.verdict] for c in claims]


def test_report_numbers_are_formatted_for_a_reader(smoke_runs):
    paths, _ = smoke_runs("grokking")
    md = paths.report_md.read_text()
    onsets = md.split("## Onsets")[1].split("##")[0]
    assert not re.search(r"\d\.\d{5,}", onsets)  # no 0.0004787-style numbers
    assert "%" in onsets
    paths, _ = smoke_runs("attention")
    fig3 = Page(paths.report_html.read_text()).tables[0]
    header = fig3[0]
    assert header[:3] == ["setting", "d", "||mu||"]
    for row in fig3[1:]:
        acc = row[header.index("test acc")]
        assert re.fullmatch(r"\d{1,3}\.\d%", acc), acc


# --- the index page ------------------------------------------------------------------------


@pytest.fixture
def runs_folder(smoke_runs, tmp_path):
    """Copies of every study's smoke run under tmp_path/runs (nested one level for attention),
    plus a hidden copy and a folder that is not a run, both of which the index must skip."""
    root = tmp_path / "runs"
    where = {}
    for name in STUDIES:
        paths, _ = smoke_runs(name)
        dest = root / ("nested" if name == "attention" else "") / name
        shutil.copytree(paths.root, dest)
        where[name] = dest
    shutil.copytree(where["classify"], root / ".classify.replaced-by-1")
    (root / "notes").mkdir()
    (root / "notes" / "env.json").write_text('{"study": "no-such-study"}')
    return root, where


def test_index_is_the_front_page_of_a_folder_of_runs(runs_folder):
    root, where = runs_folder
    runs = find_runs(root)
    assert [p.root for p in runs] == sorted(where.values())
    index = write_index(root, runs)
    assert index == root / "index.html"
    page = Page(index.read_text())
    assert raw_markdown(page) == []
    # One section per run: its heading links to its report.
    h2 = [t for tag, t in page.headings if tag == "h2"]
    assert sorted(h2) == sorted(STUDIES)
    for dest in where.values():
        link = dest.relative_to(root).as_posix() + "/report.html"
        assert link in page.links and (root / link).exists()
    # The key figure of each run, inlined.
    assert len(page.imgs) == len(STUDIES)
    for name, dest in where.items():
        study = STUDIES[name]
        data = base64.b64encode((dest / "figures" / f"{study.key_figure}.png").read_bytes())
        assert any(img["src"] == "data:image/png;base64," + data.decode() for img in page.imgs)
    # Status and wall time from summary.json; the overview has a row per run.
    overview = page.tables[0]
    assert overview[0] == ["study", "run", "status", "wall time", "claims / key number"]
    for name, dest in where.items():
        summary = read_json(dest / "summary.json")
        row = next(r for r in overview[1:] if r[0] == name)
        assert row[2:4] == [summary["status"], duration(summary["wall_s"])]
    # Claims tables for the studies with claims, with the same rows as study.claims.
    claim_tables = [t for t in page.tables if t[0] == ["claim", "paper", "this run", "verdict"]]
    in_order = sorted(where, key=where.get)  # the index lists runs by folder
    with_claims = [n for n in in_order if STUDIES[n].claims is not None]
    assert len(claim_tables) == len(with_claims) >= 2
    for name, rows in zip(with_claims, claim_tables):
        claims = STUDIES[name].claims(RunPaths(where[name]))
        assert rows[1:] == [[c.claim, c.paper, c.measured, c.verdict] for c in claims]
    # classify has no paper: its key numbers instead.
    test_acc = read_json(where["classify"] / "summary.json")["results"]["test_acc"]
    assert ["final test accuracy", pct(test_acc)] in [r for t in page.tables for r in t]
    assert {cls for cls, _ in page.spans} >= {"status-complete"}


def test_report_index_command_writes_the_page(runs_folder, capsys):
    root, _ = runs_folder
    assert main(["report", "--index", str(root)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and str(root / "index.html") in out[0]
    assert "classify/report.html" in (root / "index.html").read_text()


def test_report_index_on_a_folder_without_runs_exits_2(tmp_path, capsys):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert main(["report", "--index", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genlab: error:") and "no run folder" in err[0]
    assert not (tmp_path / "empty" / "index.html").exists()
    assert main(["report", "--index", str(tmp_path / "missing")]) == 2
    assert main(["report", "--index"]) == 2


def test_index_of_an_unfinished_run_says_so(runs_folder):
    root, where = runs_folder
    (where["grokking"] / "summary.json").unlink()
    (where["grokking"] / "config.json").unlink()
    page = Page(write_index(root, [RunPaths(where["grokking"])]).read_text())
    assert page.tables[0][1][:4] == ["grokking", "grokking", "incomplete", "n/a"]
    assert any("Claims not available" in t and "config.json" in t for t in page.prose())


# --- the verdicts, branch by branch --------------------------------------------------------
