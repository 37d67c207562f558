"""``medseg report``: one offline HTML page whose every picture exists, for one run or several side by
side, and clear errors before anything is written."""

import re
import shutil
from html.parser import HTMLParser

import pytest

from medseg.cli import main
from tests.helpers import TINY


@pytest.fixture(scope="module")
def tiny_run(phantom_dir, tmp_path_factory):
    """A tiny run that ends, as runs do by default, with a final validation in original geometry."""
    run = tmp_path_factory.mktemp("report_runs") / "tiny"
    assert main(["train", "--data", str(phantom_dir), "--output", str(run), *TINY, "train.final_validation=true"]) == 0
    return run


class _References(HTMLParser):
    """Every URL the page would load or link to."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def _references(page) -> list[str]:
    parser = _References()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.urls


def test_a_run_report_is_one_offline_page_with_its_pictures(tiny_run, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(tiny_run), "-o", str(out)]) == 0
    page = out / "index.html"
    assert str(page) in capsys.readouterr().out
    urls = _references(page)
    names = {"curves", "case_dice", "overlay_best", "overlay_median", "overlay_worst"}
    assert {re.sub(r"^run0_[^_]+_", "", u).removesuffix(".png") for u in urls} == names
    for url in urls:
        assert "://" not in url and not url.startswith("//")  # nothing fetched: no CDN, no web font
        assert (out / url).read_bytes().startswith(b"\x89PNG")
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and "@import" not in text
    assert "strategy: patch" in text and "validation:" in text  # the resolved config and the split


def test_several_runs_are_side_by_side_with_their_curves_on_one_plot(tiny_run, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(tiny_run, twin)
    out = tmp_path / "report"
    assert main(["report", str(tiny_run), str(twin), "-o", str(out)]) == 0
    urls = _references(out / "index.html")
    assert "compared_curves.png" in urls
    assert any(u.startswith("run0_") for u in urls) and any(u.startswith("run1_twin") for u in urls)
    assert all((out / u).is_file() for u in urls)


def test_a_run_whose_dataset_moved_still_reports_and_says_why_there_are_no_overlays(tiny_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run, moved)
    config = moved / "config.yaml"
    config.write_text(re.sub(r"(?m)^  root: .*$", f"  root: {tmp_path / 'gone'}", config.read_text()), encoding="utf-8")
    out = tmp_path / "report"
    assert main(["report", str(moved), "-o", str(out)]) == 0
    text = (out / "index.html").read_text(encoding="utf-8")
    assert "No overlays: the dataset cannot be read any more" in text


@pytest.mark.parametrize("problem", ["not_a_run", "output_not_empty"])
def test_bad_input_is_one_clear_error_and_nothing_is_written(problem, tiny_run, tmp_path, capsys):
    out = tmp_path / "report"
    run = tiny_run
    if problem == "not_a_run":
        run = tmp_path / "empty"
        run.mkdir()
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine", encoding="utf-8")
    assert main(["report", str(run), "-o", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    assert ("not a training run folder" in error) if problem == "not_a_run" else ("not an empty folder" in error)
    if problem == "not_a_run":
        assert not out.exists()
    else:
        assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not list(tmp_path.glob(".report.*"))  # no half-built report left beside it
