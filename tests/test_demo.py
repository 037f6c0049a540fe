import base64
import dataclasses
import json
from html.parser import HTMLParser

from genlab import demo, studies
from genlab.report import duration, pct
from genlab.studies import STUDIES


class Page(HTMLParser):
    """Links, images, table rows (cell texts) and all text of an HTML page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.links, self.imgs, self.rows, self.text = [], [], [], []
        self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a":
            self.links.append(a.get("href"))
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def test_demo_runs_every_smoke_preset_and_links_reports(tmp_path, monkeypatch):
    monkeypatch.setattr(studies, "STUDIES", {"classify": STUDIES["classify"]})
    assert demo.run_demo(tmp_path / "demo", quiet=True) == 0
    index = (tmp_path / "demo" / "index.html").read_text()
    assert "classify/report.html" in index and "complete" in index
    summary = json.loads((tmp_path / "demo" / "classify" / "summary.json").read_text())
    assert summary["status"] == "complete"
    # A second demo reuses the finished run instead of training again.
    mtime = (tmp_path / "demo" / "classify" / "metrics.jsonl").stat().st_mtime_ns
    assert demo.run_demo(tmp_path / "demo", quiet=True) == 0
    assert (tmp_path / "demo" / "classify" / "metrics.jsonl").stat().st_mtime_ns == mtime


def test_demo_index_is_a_front_page(tmp_path, monkeypatch, capsys):
    """Per study: its key figure inlined, status, wall time, key numbers (classify has no
    paper), and a link to the full report; a study that fails is shown failed, with its error,
    and the others still appear."""

    def broken_run(cfg, run):
        raise RuntimeError("no such luck")

    broken = dataclasses.replace(
        STUDIES["classify"], name="broken", run=broken_run, key_figure=None
    )
    monkeypatch.setattr(studies, "STUDIES", {"classify": STUDIES["classify"], "broken": broken})
    out = tmp_path / "demo"
    assert demo.run_demo(out, quiet=True) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"demo: 1/2 studies complete -> {out / 'index.html'}"
    page = Page((out / "index.html").read_text())
    text = " ".join(page.text)
    summary = json.loads((out / "classify" / "summary.json").read_text())

    assert "classify/report.html" in page.links and "broken/report.html" not in page.links
    curves = base64.b64encode((out / "classify" / "figures" / "curves.png").read_bytes())
    assert page.imgs == ["data:image/png;base64," + curves.decode()]
    overview = {r[0]: r for r in page.rows[1:] if len(r) == 5}
    assert overview["classify"][2:4] == ["complete", duration(summary["wall_s"])]
    assert overview["broken"][2] == "failed"
    assert ["final test accuracy", pct(summary["results"]["test_acc"])] in page.rows
    assert "RuntimeError: no such luck" in text
    assert "Full report" in text
