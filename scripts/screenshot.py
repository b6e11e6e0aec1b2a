"""The README's picture, made from a run: the viewer's first screen (the run's summary) beside
one question's heat maps, as a real browser shows them (Debian's Chromium through Playwright).

    .venv/bin/python scripts/screenshot.py runs/RUN [--out docs/img]

Writes OUT/demo.png and OUT/demo.json: the run, its report's summary section (what the README's
headline quotes) and a hash of each file that shapes the picture, so a test can tell when it is
out of date."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
# What the picture is made of: when one changes, the picture must be made again.
SHAPES = [
    "measure/report/view_assets/app.js",
    "measure/report/view_assets/style.css",
    "measure/report/view_assets/index.html",
    "measure/report/summary.py",
    "measure/report/ledger.py",
]
WIDTH, HEIGHT = 1100, 820


def hashes() -> dict[str, str]:
    return {p: hashlib.sha256((REPO / p).read_bytes()).hexdigest() for p in SHAPES}


def chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        sys.exit("screenshot: no Chromium (apt-get install chromium, or set CHROMIUM=/path/to/it)")
    return found


def shoot(page_path: Path, heatmap_key: str | None, out: Path) -> None:
    """The overview's first screen, and (when the run has heat maps) the first drawn question's."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.goto(page_path.as_uri())
        page.wait_for_function("window.VC_READY !== undefined")
        page.screenshot(path=f"{tmp}/overview.png")
        shots = [Image.open(f"{tmp}/overview.png")]
        if heatmap_key is not None:
            index = page.evaluate(
                "key => window.VC.predictions.findIndex(r => { const q = window.VC.questions[r[0]];"
                " return `${window.VC.fields.model[r[1]]}/${q[0]}/${window.VC.fields.variant[r[2]]}` === key; })",
                heatmap_key,
            )
            page.goto(page_path.as_uri() + f"#sample/{index}")
            page.wait_for_selector("#heatmaps img")
            page.wait_for_function("[...document.querySelectorAll('#heatmaps img')].every(i => i.complete)")
            page.locator("#heatmaps").screenshot(path=f"{tmp}/heatmaps.png")
            shots.append(Image.open(f"{tmp}/heatmaps.png"))
        browser.close()
        picture = side_by_side(shots)
        picture.save(out, optimize=True)


def side_by_side(shots: list[Image.Image]) -> Image.Image:
    """The shots scaled to one height, left to right."""
    scaled = [s.resize((round(s.width * HEIGHT / s.height), HEIGHT)) if s.height != HEIGHT else s for s in shots]
    canvas = Image.new("RGB", (sum(s.width for s in scaled), HEIGHT), "white")
    x = 0
    for s in scaled:
        canvas.paste(s, (x, 0))
        x += s.width
    return canvas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    args = ap.parse_args()
    from core import runs
    from measure.report import build, render, view

    run = runs.load(args.run)
    page = view.write(run).resolve()  # the viewer (and the report) as this code draws them
    drawn = sorted(view.heatmaps(run), key=lambda k: (not k.endswith("/trajectory"), k))
    args.out.mkdir(parents=True, exist_ok=True)
    shoot(page, drawn[0] if drawn else None, args.out / "demo.png")
    record = {"run": args.run.name, "summary": render.summary_markdown(build(run)), "shaped_by": hashes()}
    (args.out / "demo.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(args.out / "demo.png")


if __name__ == "__main__":
    main()
