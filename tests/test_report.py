"""camcli report: every record listed, valid self-contained HTML, thumbnails reused, and
(in headless Chromium) the page renders, sorts, filters and pages."""

from __future__ import annotations

import json
import re

import html5lib
import pytest
from conftest import cards, dom, run, write_image

from camcli.analysis.report import PAGE_SIZE, build_report


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, model_files):
    root = tmp_path_factory.mktemp("report")
    photos = root / "photos"
    for i in range(230):
        write_image(photos / f"k{i % 4}" / f"{i:03d}.jpg", size=(40 + i % 13, 30),
                    color=(20 + i, 200 - i % 150, 90))
    for i in range(3):
        (photos / "k0" / f"bad{i}.jpg").write_bytes(b"not an image")
    out = root / "out"
    args = ["batch", str(photos), "--out", str(out), "--report", "-q", "--model",
            model_files["gap"], "--labels", model_files["labels"], "--preprocess", "scale01",
            "--device", "cpu", "--metrics", "--metric-steps", "2"]
    result = run(args)
    assert result.exit_code == 1  # the three bad files
    assert f"camcli: report in {out / 'index.html'}" in result.stderr
    return out


def embedded(page: str) -> list[dict]:
    data = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(data.group(1).replace("<\\/", "</"))


def test_the_report_lists_every_record(finished_run):
    with open(finished_run / "manifest.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    items = embedded((finished_run / "index.html").read_text(encoding="utf-8"))
    assert len(items) == len(records) == 233
    assert [i["input"] for i in items] == [r["input"] for r in records]
    assert sum(1 for i in items if i["error"]) == 3
    good = next(i for i in items if not i["error"])
    assert (finished_run / good["overlay"]).is_file()
    assert (finished_run / good["original"]).is_file()
    assert (finished_run / good["output"]).is_file()
    # every record's metrics reach the page as the manifest has them (and the run asked
    # for them: each good record has the four faithfulness figures)
    assert [i["metrics"] for i in items] == [r["metrics"] for r in records]
    assert all(set(i["metrics"]) >= {"deletion_auc", "insertion_auc", "average_drop",
                                     "increase"} for i in items if not i["error"])


def test_the_html_is_valid_and_self_contained(finished_run):
    page = (finished_run / "index.html").read_text(encoding="utf-8")
    html5lib.HTMLParser(strict=True).parse(page)  # raises on any parse error
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page


def test_thumbnails_are_made_once(finished_run):
    stamps = {p: p.stat().st_mtime_ns for p in (finished_run / ".thumbnails").rglob("*.jpg")}
    assert len(stamps) == 2 * 230
    again = build_report(str(finished_run))
    assert again.thumbnails_made == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_report_of_a_folder_without_manifest_is_a_usage_error(tmp_path):
    result = run(["report", str(tmp_path)])
    assert result.exit_code == 2
    assert f"Error: {tmp_path} has no manifest.jsonl: run camcli batch" in result.stderr


@pytest.mark.chromium
def test_chromium_renders_a_page_of_cards_sorted_by_score(finished_run):
    document = dom(finished_run / "index.html", "#sort=score&order=desc")
    shown = cards(document)
    assert len(shown) == PAGE_SIZE
    scores = [float(score) for _, score in shown]
    assert scores == sorted(scores, reverse=True)
    assert "page 1 of 3" in document and "233 shown" in document
    assert "records: 233" in document and "errors: 3" in document


@pytest.mark.chromium
def test_chromium_filters_errors_and_pages(finished_run):
    errors = cards(dom(finished_run / "index.html", "#errors=1"))
    assert len(errors) == 3 and all(kind == " error" for kind, _ in errors)
    last = dom(finished_run / "index.html", "#sort=input&page=3")
    assert len(cards(last)) == 233 - 2 * PAGE_SIZE and "page 3 of 3" in last
    one_class = dom(finished_run / "index.html", "#q=" + "k3")
    assert len(cards(one_class)) == 57  # inputs 3, 7, ..., 227 live in k3
