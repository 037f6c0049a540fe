import json

from genlab import demo, studies
from genlab.studies import STUDIES


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
