"""`measure view`: a run as one static page, `runs/<id>/index.html` + `runs/<id>/view/`,
computed from the run as stored (`core.runs`; and the dataset's questions and clips
for the question text and the frames): it opens from file:// with no server or network.

`view/data.js` holds the run as compact JSON (questions once, predictions as index rows)
and the report as report.json holds it; `view/app.js` and `view/style.css` are copied from
this package; `view/thumbs/<variant>/<video>_<frame>.jpg` are the frames each clip was
sent with, decoded from the recorded frame indices once per clip.
"""

from __future__ import annotations

import html
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from core import runs
from core.errors import UserError
from core.files import atomic_path, atomic_write
from core.layout import DataLayout
from core.records import Prediction
from core.runs import Run
from core.variants import BLIND, CONTROLS, CUED, INTERVENTIONS, PLAIN
from measure import report
from measure.report import render
from measure.report.build import Report

ASSETS = Path(__file__).with_name("view_assets")
THUMB_HEIGHT = 72
THUMB_QUALITY = 80
FIELDS = ("model", "variant", "type", "template", "verb", "status")
GROUP_ORDER = ("mean", "early", "middle", "late")  # layer groups of the heat maps, as the page lists them
BUCKETS = ("fixed", "regressed", "still failing", "still right")


def load(run: Path | str, runs_dir: Path, data: Path | None = None) -> Run:
    """A run to show: it must hold predictions."""
    loaded = runs.load(run, runs_dir, data)
    if not loaded.predictions:
        raise UserError(f"{loaded.layout.predictions if loaded.layout else run}: no predictions yet")
    return loaded


def _order(variant: str) -> tuple[int, str]:
    group = 0 if variant == PLAIN else 1 if variant in CUED else 2 if variant in INTERVENTIONS else 3
    group += variant in CONTROLS
    return (group, variant)


def thumbnails(run: Run, out: Path, progress: Callable[[int, int], None] | None = None) -> dict[str, object]:
    """Write the frames each (variant, clip) was sent with as small JPEGs, once; returns
    "variant/video" -> the frame indices written, or "missing" when the clip is gone."""
    from decord import VideoReader, cpu
    from PIL import Image

    wanted: dict[tuple[str, str], set[int]] = {}
    for p in run.predictions:
        if p.frame_indices and p.variant != BLIND:
            wanted.setdefault((p.variant, p.video_id), set()).update(p.frame_indices)
    layout = DataLayout(run.data) if run.data else None
    done: dict[str, object] = {}
    for n, ((variant, video), frames) in enumerate(sorted(wanted.items()), 1):
        folder = out / variant
        targets = {i: folder / f"{video}_{i}.jpg" for i in sorted(frames)}
        todo = [i for i, path in targets.items() if not path.is_file()]
        clip = layout.clip(variant, video) if layout else None
        if todo and (clip is None or not clip.is_file()):
            done[f"{variant}/{video}"] = "missing"
            continue
        if todo:
            folder.mkdir(parents=True, exist_ok=True)
            try:
                reader = VideoReader(str(clip), ctx=cpu(0))
            except Exception as e:  # a corrupt clip: the strip says so, the page still renders
                done[f"{variant}/{video}"] = f"clip unreadable: {e}"
                continue
            if todo[-1] >= len(reader):
                done[f"{variant}/{video}"] = (
                    f"clip changed since the run: it has {len(reader)} frames, the run sent frame {todo[-1]}"
                )
                continue
            batch = reader.get_batch(todo).asnumpy()
            for i, frame in zip(todo, batch):
                image = Image.fromarray(frame)
                image = image.resize((max(1, round(image.width * THUMB_HEIGHT / image.height)), THUMB_HEIGHT))
                with atomic_path(targets[i]) as tmp:
                    image.save(tmp, format="JPEG", quality=THUMB_QUALITY)
        done[f"{variant}/{video}"] = sorted(frames)
        if progress:
            progress(n, len(wanted))
    return done


def buckets(a: list[Prediction], b: list[Prediction]) -> dict[str, list[list]]:
    """The (question, model, variant) items both runs scored, by what changed from A to B:
    bucket -> [index of the item in A, B's reply, B's status]."""
    index_b = {p.key: p for p in b if p.status != "error"}
    out: dict[str, list[list]] = {k: [] for k in BUCKETS}
    for i, p in enumerate(a):
        q = index_b.get(p.key)
        if p.status == "error" or q is None:
            continue
        name = (
            ("still right" if q.correct else "regressed") if p.correct else ("fixed" if q.correct else "still failing")
        )
        out[name].append([i, q.reply, q.status])
    return out


def compact(run: Run, r: Report, thumbs: dict[str, object], other: Run | None) -> dict:
    """Everything the page shows, as compact JSON: questions once, predictions as index rows."""
    values: dict[str, list[str]] = {f: [] for f in FIELDS}
    codes: dict[str, dict[str, int]] = {f: {} for f in FIELDS}

    def code(field: str, value: str) -> int:
        if value not in codes[field]:
            codes[field][value] = len(values[field])
            values[field].append(value)
        return codes[field][value]

    verdicts: dict[int, list] = {}
    index = {p.key: i for i, p in enumerate(run.predictions)}
    for j in run.judgements:
        if j.key[:3] in index:
            verdicts.setdefault(index[j.key[:3]], []).append([j.judge, j.status, j.pred, j.score, j.error])
    q_index: dict[str, int] = {}
    q_rows: list[list] = []
    p_rows: list[list] = []
    for p in run.predictions:
        if p.question_id not in q_index:
            q = run.questions.get(p.question_id)
            q_index[p.question_id] = len(q_rows)
            q_rows.append(
                [
                    p.question_id,
                    p.video_id,
                    code("type", p.type),
                    code("template", p.template),
                    code("verb", p.verb),
                    q.question if q else "",
                    p.choices,
                    p.answer,
                ]
            )
        p_rows.append(
            [
                q_index[p.question_id],
                code("model", p.model),
                code("variant", p.variant),
                code("status", p.status),
                int(p.correct),
                p.reply,
                p.latency_s,
                p.attempts,
                p.error,
                p.probs,
                p.frame_indices,
                p.prompt_tokens,
                p.reasoning,
            ]
        )
    return {
        "run": run.id,
        "data": str(run.data) if run.data else None,
        "fields": values,
        "variants": sorted(values["variant"], key=_order),
        "questions": q_rows,
        "predictions": p_rows,
        "thumbs": thumbs,
        "heatmaps": heatmaps(run),
        "effects": effect_maps(run),
        "verdicts": verdicts,
        "report": asdict(render.record(r)),
        "parents": run.parents,
        "compare": {"run": other.id, "buckets": buckets(run.predictions, other.predictions)} if other else None,
    }


def heatmaps(run: Run) -> dict[str, list[str]]:
    """ "model/question/variant" -> the layer groups whose heat map `interpret` drew (paths from
    the run folder: interpret/heatmaps/<model>/<question>/<variant>.<group>.png)."""
    assert run.layout is not None
    out = {}
    for rec in run.attention:
        drawn = [g for g in rec.maps if run.layout.heatmap(rec.model, rec.question_id, rec.variant, g).is_file()]
        drawn.sort(key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g))
        if drawn:
            out[f"{rec.model}/{rec.question_id}/{rec.variant}"] = drawn
    return dict(sorted(out.items()))


def effect_maps(run: Run) -> list[str]:
    """The "model/question/variant"s whose occlusion map `interpret --effects` drew
    (interpret/heatmaps/<model>/<question>/<variant>.effect.png)."""
    assert run.layout is not None
    layout = run.layout
    drawn = [r for r in run.attention if r.occlusion and layout.effect_map(r.model, r.question_id, r.variant).is_file()]
    return sorted(f"{r.model}/{r.question_id}/{r.variant}" for r in drawn)


def write(run: Run, other: Run | None = None, progress: Callable[[int, int], None] | None = None) -> Path:
    """index.html and view/ in the run folder (atomic files); also writes the run's report
    files, built as every command builds them, so the page and report.json cannot disagree."""
    assert run.layout is not None
    r = report.write(run)
    folder = run.layout.root / "view"
    thumbs = thumbnails(run, folder / "thumbs", progress)
    for asset in ("app.js", "style.css"):
        with atomic_path(folder / asset) as tmp:
            shutil.copyfile(ASSETS / asset, tmp)
    payload = json.dumps(compact(run, r, thumbs, other), separators=(",", ":"))  # JS: NaN is fine
    atomic_write(folder / "data.js", f"window.VC = {payload};\n")
    page = run.layout.root / "index.html"
    title = html.escape(run.id)  # a folder's name may hold anything, <script> included
    atomic_write(page, (ASSETS / "index.html").read_text(encoding="utf-8").replace("{{title}}", title))
    return page
