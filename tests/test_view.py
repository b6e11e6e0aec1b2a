"""The run viewer in a real browser: Debian's Chromium driven by Playwright, pages opened
from file:// (no server), runs made by measure against the real vLLM server."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from core.layout import RunLayout
from core.records import Prediction, to_json_line
from core.runs import load
from tests.conftest import REPO, cli, copy_run

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium found (apt-get install chromium; scripts/setup.sh "
    "does it when root), or set CHROMIUM=/path/to/chromium",
)


def _frame(run: Path) -> pd.DataFrame:
    """The run's predictions as the viewer numbers them: in the run reader's (key) order."""
    lines = "".join(to_json_line(p) + "\n" for p in load(RunLayout(run)).predictions)
    return pd.read_json(io.StringIO(lines), lines=True)


@pytest.fixture(scope="module")
def runs(server, measured, synthetic, tmp_path_factory):
    """Two real runs (letters with probabilities on 8 questions, then the session's run in plain
    text on every one), and a copy of the dataset with one clip gone."""
    root = tmp_path_factory.mktemp("view")
    r = cli(
        f"measure --data {synthetic} --base-url {server.base_url} --runs-dir {root} --run-id a "
        "--limit 8 --answer-format letters --concurrency 8"
    )
    assert r.returncode == 0, r.stderr[-3000:]
    copy_run(measured, root, "b")
    data = root / "data"
    shutil.copytree(synthetic, data, ignore=shutil.ignore_patterns("raw"))
    gone = _frame(root / "a")["video_id"].astype(str).iloc[-1]
    (data / "clips" / "plain" / f"{gone}.mp4").unlink()
    return root, data, gone


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _go(page, page_path: Path, fragment: str) -> None:
    """Show `fragment` (a '#...' route) and wait until the page has rendered it."""
    page.goto(page_path.as_uri() + fragment)
    page.wait_for_function(f"document.body.dataset.hash === {json.dumps(fragment)}")


def _open(browser, page_path: Path, errors: list[str]):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    started = time.perf_counter()
    page.goto(page_path.as_uri())
    page.wait_for_function("window.VC_READY !== undefined")
    return page, time.perf_counter() - started


def test_viewer_shows_the_run_as_report_json_and_predictions_say(runs, browser, tmp_path):
    root, data, gone = runs
    run = root / "a"
    # A torn last line (a crash mid-write) is repaired with measure's warning.
    with open(run / "predictions.jsonl", "a") as f:
        f.write('{"question_id": "torn')
    r = cli(f"measure view {run} {root / 'b'} --data {data}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dropping a torn last line" in r.stderr
    page_path = Path(r.stdout.strip().splitlines()[-1])
    assert page_path == run / "index.html" and (run / "view" / "data.js").is_file()
    assert "http" not in (run / "index.html").read_text() and "http" not in (run / "view" / "app.js").read_text()
    report = json.loads((run / "report.json").read_text())
    preds = _frame(run)
    errors: list[str] = []
    page, load_s = _open(browser, page_path, errors)
    print(f"viewer load, {len(preds)} predictions: {load_s:.2f} s")

    # 1. The overview's numbers are report.json's.
    for row in report["accuracy"]:
        for col in ("object_acc", "verb_acc", "overall_acc", "n"):
            shown = page.inner_text(f'[data-cell="{row["model"]}|{row["variant"]}|{col}"]')
            assert float(shown) == pytest.approx(row[col], abs=0.005), (row, col, shown)
    for i, row in enumerate(report["cued_vs_plain"]):
        assert float(page.inner_text(f'[data-cell="cued_vs_plain|{i}|delta"]')) == pytest.approx(
            row["delta"], abs=0.005
        )
        assert int(page.inner_text(f'[data-cell="cued_vs_plain|{i}|only_a"]')) == row["only_a"]
    # The first screen is report.md's summary: the primary family as a table, the summary's
    # sentences; every other family folded, with all its tests (the ledger's rows).
    ledger = pd.DataFrame(report["ledger"])
    primary = ledger[ledger["family"] == "primary"].reset_index(drop=True)
    for i, row in primary.iterrows():
        assert float(page.inner_text(f'[data-cell="primary|{i}|delta"]')) == pytest.approx(row["delta"], abs=0.05)
    assert len(primary) and page.inner_text("#scope") == report["summary"][0]
    assert page.locator("#summary li").all_inner_texts() == report["summary"][1:]
    folded = page.locator("details.family:not([open])")
    others = ledger[~ledger["family"].isin(["primary", "causal"])]
    assert folded.count() == others["family"].nunique() > 0
    for family, rows in others.groupby("family"):
        said = page.inner_text(f'details.family[data-family="{family}"] summary')
        assert said == f"{family}: {int(rows['significant'].sum())} of {len(rows)} significant after Holm"
        assert page.locator(f'table[data-family="{family}"] tr').count() == len(rows) + 1
    for i, row in enumerate(report["adapter_vs_base"]):  # McNemar's discordant cells list their questions
        for cell in ("only_a", "only_b"):
            _go(page, page_path, "")
            page.click(f'[data-cell="adapter_vs_base|{i}|{cell}"] a')
            expect(page.locator("#count")).to_have_text(f"{row[cell]} samples")
    _go(page, page_path, "")

    # 2. Two filters, checked against pandas on predictions.jsonl.
    model = preds["model"].iloc[0]
    page.click(f'[data-cell="{model}|plain|overall_acc"] a')
    page.wait_for_selector("#count")
    scored = preds[(preds["model"] == model) & (preds["variant"] == "plain") & (preds["status"] != "error")]
    expect(page.locator("#count")).to_have_text(f"{len(scored)} samples")
    _go(page, page_path, "#samples")
    page.select_option('select[name="model"]', model)
    page.select_option('select[name="outcome"]', "wrong")
    wrong = preds[(preds["model"] == model) & (preds["status"] == "ok") & ~preds["correct"]]
    expect(page.locator("#count")).to_have_text(f"{len(wrong)} samples")
    assert page.locator("#samples tr.pick").count() == min(50, len(wrong))
    page.select_option('select[name="variant"]', "trajectory")
    both = wrong[wrong["variant"] == "trajectory"]
    expect(page.locator("#count")).to_have_text(f"{len(both)} samples")
    page.fill('input[name="q"]', str(gone))
    page.press('input[name="q"]', "Enter")
    expect(page.locator("#count")).to_have_text(
        f"{len(both[both['video_id'].astype(str).str.contains(str(gone))])} samples"
    )

    # 3. One sample: its frame strip has one loaded image per frame sent, for every variant.
    sample = preds[(preds["variant"] == "plain") & (preds["video_id"].astype(str) != str(gone))].iloc[0]
    index = int(
        preds.index[
            (preds["question_id"] == sample["question_id"])
            & (preds["model"] == sample["model"])
            & (preds["variant"] == "plain")
        ][0]
    )
    _go(page, page_path, f"#sample/{index}")
    for variant in ("plain", "trajectory"):
        sent = preds[
            (preds["question_id"] == sample["question_id"])
            & (preds["model"] == sample["model"])
            & (preds["variant"] == variant)
        ]["frame_indices"].iloc[0]
        images = page.locator(f'.strip[data-variant="{variant}"] img')
        assert images.count() == len(sent) > 0
        page.wait_for_function(
            f"[...document.querySelectorAll('.strip[data-variant=\"{variant}\"] img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
    assert page.locator("#choices li").count() == len(sample["choices"])
    assert "right answer" in page.inner_text(f'#choices li[data-choice="{sample["answer"]}"]')
    assert page.locator("#choices .bar").count() == len(sample["choices"])  # letters: per-choice probabilities
    page.screenshot(path=str(tmp_path / "sample.png"), full_page=True)
    assert (tmp_path / "sample.png").stat().st_size > 10_000

    # A clip that is gone says so; the page still renders.
    lost = int(preds.index[(preds["video_id"].astype(str) == str(gone)) & (preds["variant"] == "plain")][0])
    _go(page, page_path, f"#sample/{lost}")
    assert page.inner_text('.strip[data-variant="plain"]').endswith("clip missing")

    # 4. Two runs: the buckets are pandas' on the items both scored.
    b = _frame(root / "b")
    keys = ["question_id", "model", "variant"]
    both_runs = preds[preds["status"] != "error"].merge(b[b["status"] != "error"], on=keys, suffixes=("_a", "_b"))
    fixed = both_runs[~both_runs["correct_a"] & both_runs["correct_b"]]
    _go(page, page_path, "#compare")
    for (m, v), g in both_runs.groupby(["model", "variant"]):
        cell = page.inner_text(f'[data-cell="{m}|{v}|regressed"]')
        assert int(cell) == int((g["correct_a"] & ~g["correct_b"]).sum())
    _go(page, page_path, "#compare?bucket=fixed")
    expect(page.locator("#count")).to_have_text(f"{len(fixed)} questions")
    page.screenshot(path=str(tmp_path / "compare.png"))
    assert errors == []


@pytest.mark.slow
def test_viewer_pages_fifty_thousand_predictions(browser, tmp_path):
    run = tmp_path / "big"
    run.mkdir()
    with open(run / "predictions.jsonl", "w") as f:
        for i in range(50_000):
            v = i % 20_000
            f.write(
                to_json_line(
                    Prediction(
                        question_id=f"q{v}",
                        video_id=f"v{v // 3}",
                        type="object" if v % 2 else "verb",
                        model="base" if i < 20_000 else "adapter" if i < 40_000 else "base",
                        variant="plain" if i < 40_000 else "trajectory",
                        choices=["a", "b", "c", "d"],
                        answer="a",
                        reply="a" if i % 3 else "b",
                        status="ok",
                        correct=bool(i % 3),
                        template="Pushing [something]",
                        verb="pushing",
                    )
                )
                + "\n"
            )
    started = time.perf_counter()
    r = cli(f"measure view {run}")
    assert r.returncode == 0, r.stderr[-3000:]
    print(f"view of 50,000 predictions written in {time.perf_counter() - started:.1f} s")
    assert "its dataset is not found" in r.stderr
    errors: list[str] = []
    page, load_s = _open(browser, run / "index.html", errors)
    print(f"viewer load, 50,000 predictions: {load_s:.2f} s")
    _go(page, run / "index.html", "#samples?model=base&outcome=wrong")
    preds = _frame(run)
    expect(page.locator("#count")).to_have_text(
        f"{int(((preds['model'] == 'base') & ~preds['correct']).sum())} samples"
    )
    assert page.locator("#samples tr.pick").count() == 50
    page.click("#next")
    expect(page.locator(".pager span").first).to_contain_text("page 2 of ")
    _go(page, run / "index.html", "#sample/0")
    assert "clip missing" in page.inner_text(
        '.strip[data-variant="plain"]'
    ) or "frames not recorded" in page.inner_text('.strip[data-variant="plain"]')
    assert errors == []


def test_the_page_title_shows_a_run_folder_name_as_text(measured, tmp_path):
    """A folder's name may hold markup: the page shows it, never runs it."""
    run = copy_run(measured, tmp_path, "<img src=x onerror=alert(1)>")
    r = cli("measure view", run.root)
    assert r.returncode == 0, r.stderr[-2000:]
    page = (run.root / "index.html").read_text()
    assert "<img" not in page and "<title>&lt;img src=x onerror=alert(1)&gt; · visual-cues run</title>" in page


def test_view_refuses_a_folder_without_predictions(tmp_path):
    r = cli(f"measure view {tmp_path}")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == f"error: {tmp_path}: no predictions.jsonl (is this a run folder?)"


def test_the_viewer_shows_interprets_heat_maps_of_every_variant(runs, browser, tmp_path):
    """Attention and, beside it, the occlusion map (`--effects ablation --occlusion`) of every
    variant, labelled unvalidated; an occlusion map is computed only for the questions drawn
    (`--pictures`), and only when asked: by default there is none."""
    root, _, _ = runs
    shutil.copytree(root / "a", tmp_path / "a")
    measured = RunLayout(tmp_path / "a")
    r = cli("interpret", measured.root, "--limit", 1, "--pictures", 1, "--effects", "ablation", "--models", "tiny-vlm")
    assert r.returncode == 0 and not any(x.occlusion for x in load(measured).attention), r.stderr[-3000:]
    occluded_with = f"interpret {measured.root} --limit 2 --effects ablation --occlusion --models tiny-vlm --pictures"
    r = cli(occluded_with, 1)
    assert r.returncode == 0 and "occlusion maps (unvalidated): " in r.stderr, r.stderr[-3000:]
    assert cli("measure", "view", measured.root).returncode == 0
    run = load(measured)
    rec = next(r for r in run.attention if r.maps)
    occluded = {r.question_id for r in run.attention if r.occlusion}
    assert occluded == {rec.question_id} and len({r.question_id for r in run.attention}) == 2
    again = cli(occluded_with, 2)
    assert again.returncode == 0, again.stderr[-3000:]  # resumed with more drawn: theirs made again
    before, run = run, load(measured)
    assert {r.question_id for r in run.attention if r.occlusion} == {r.question_id for r in before.attention}
    assert len(run.attention) == len(before.attention) and len(measured.attention.read_text().splitlines()) == len(
        run.attention
    )
    drawn = sorted(r.variant for r in run.attention if (r.model, r.question_id) == (rec.model, rec.question_id))
    index = next(i for i, p in enumerate(run.predictions) if p.key == rec.key)
    errors: list[str] = []
    page, _ = _open(browser, measured.root / "index.html", errors)
    _go(page, measured.root / "index.html", f"#sample/{index}")
    images = page.locator("#heatmaps img[data-variant]")
    assert sorted(images.evaluate_all("els => els.map(e => e.dataset.variant)")) == drawn
    loaded = "[...document.querySelectorAll('#heatmaps img')].every(i => i.complete && i.naturalWidth > 0)"
    page.wait_for_function(loaded)
    assert all(src.endswith(".mean.png") for src in images.evaluate_all("els => els.map(e => e.src)"))
    effects = page.locator("#heatmaps figure.effect img").evaluate_all("els => els.map(e => e.src)")
    assert sorted(src.rsplit("/", 1)[1] for src in effects) == [f"{v}.effect.png" for v in drawn]
    captions = page.locator("#heatmaps figure.effect figcaption").all_inner_texts()
    assert captions and all(c.startswith("occlusion (UNVALIDATED") for c in captions)
    page.select_option("#heatmaps select", "L0")
    page.wait_for_function(loaded)
    assert all(src.endswith(".L0.png") for src in images.evaluate_all("els => els.map(e => e.src)"))
    assert errors == []


def test_the_readme_picture_is_made_by_its_script_from_a_run(runs, tmp_path):
    """scripts/screenshot.py (the README's picture): the viewer's first screen of a run, by the
    same browser, beside its heat maps when it has some; its record carries the run's summary
    and the hashes that tell when the picture is out of date."""
    root, _, _ = runs
    r = subprocess.run(
        [sys.executable, "scripts/screenshot.py", str(root / "b"), "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, CHROMIUM=CHROMIUM),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    from PIL import Image

    with Image.open(tmp_path / "demo.png") as picture:
        assert picture.width >= 1000 and picture.height >= 800
    record = json.loads((tmp_path / "demo.json").read_text())
    assert (root / "b" / "report.md").read_text().startswith(record["summary"])
    assert record["run"] == "b" and all(len(h) == 64 for h in record["shaped_by"].values())
