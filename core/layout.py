"""Where things live inside a prepared dataset and inside a run folder.

data/NAME/                        runs/RUN/
  questions.jsonl  (Question)       predictions.jsonl  (Prediction, the source of truth)
  questions.parquet                 run.json           (RunRecord)
  manifest.json    (Manifest)       report.{md,csv,json}, deltas.csv, templates.csv
  clips/<variant>/<video>.mp4       accuracy.png, deltas.png, calibration.json (`measure calibrate`)
  boxes/<video>.json (each frame's   interpret/  (where the model looked: `interpret`)
    boxes, as cues were drawn)
  raw/             (prepare synthetic's SSV2-format input)

data/adapters/NAME/  adapter_config.json + weights (PEFT), train_args.json (TrainArgs),
                     loss.csv, loss.png, tokens.png, checkpoints/

runs/profile/        profile.json (ProfileRecord), profile.md, latency.png, throughput.png,
                     servers/<model>-<dtype>.log (`measure profile`)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.defaults import RUNS_ROOT
from core.files import read_json
from core.variants import BLIND, CUED, DRAWINGS_V1, PLAIN, STUDY_PUBLISHED


@dataclass(frozen=True)
class DataLayout:
    """Paths inside one prepared dataset directory."""

    root: Path
    clip_suffix: str = field(default=".mp4")

    @property
    def questions(self) -> Path:
        return self.root / "questions.jsonl"

    @property
    def parquet(self) -> Path:
        return self.root / "questions.parquet"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def shard_manifest(self, i: int, n: int) -> Path:
        return self.root / f"manifest.shard-{i}-of-{n}.json"

    @property
    def raw(self) -> Path:
        """Where `prepare synthetic` writes its raw SSV2-format data."""
        return self.root / "raw"

    def clips_dir(self, variant: str) -> Path:
        return self.root / "clips" / variant

    def clip_settings(self, variant: str) -> Path:
        """What the clips of a variant were rendered with: reused only under equal settings."""
        return self.clips_dir(variant) / ".settings.json"

    def drawing(self, variant: str) -> str | None:
        """The drawing a cued variant's clips were made with (`core.variants.DRAWINGS`), as its
        clips' settings record it; a dataset of before schema v4 by the name it used then, the
        study's import by its kind. None for a variant without a cue, or clips nobody recorded."""
        marker = self.clip_settings(variant)
        if marker.is_file():
            recorded = read_json(marker)
            return recorded.get("drawing") or (DRAWINGS_V1.get(variant) if variant in DRAWINGS_V1 else None)
        if variant in CUED and self.manifest.is_file() and read_json(self.manifest).get("kind") == "visual-cues":
            return STUDY_PUBLISHED
        return None

    def clip(self, variant: str, video_id: str) -> Path:
        return self.clips_dir(variant) / f"{video_id}{self.clip_suffix}"

    def asked_with(self, variant: str, video_id: str) -> Path | None:
        """The clip a question on `variant` is asked with: None for blind (the text alone)."""
        return None if variant == BLIND else self.clip(variant, video_id)

    def boxes(self, video_id: str) -> Path:
        """A clip's boxes per frame, as its cues were drawn from them (datasets with boxes)."""
        return self.root / "boxes" / f"{video_id}.json"

    @property
    def frame_store(self) -> Path:
        """Where measure keeps the frames it prepared from these clips, between runs."""
        return self.root / "frame-store"

    def variants(self) -> list[str]:
        """Clip variants on disk, in a stable order (plain first)."""
        clips = self.root / "clips"
        found = sorted(p.name for p in clips.iterdir() if p.is_dir()) if clips.is_dir() else []
        return sorted(found, key=lambda v: (v != PLAIN, v))


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run folder."""

    root: Path

    @classmethod
    def find(cls, run: Path | str, runs_dir: Path = RUNS_ROOT) -> RunLayout:
        """A run given as a folder, or as a run id under `runs_dir`."""
        run = Path(run)
        return cls(run if run.is_dir() else runs_dir / run)

    @property
    def id(self) -> str:
        return self.root.name

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.jsonl"

    @property
    def judgements(self) -> Path:
        return self.root / "judgements.jsonl"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_csv(self) -> Path:
        return self.root / "report.csv"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def calibration(self) -> Path:
        """`measure calibrate`'s simulations of the run's statistics (CalibrationRecord)."""
        return self.root / "calibration.json"

    @property
    def deltas_csv(self) -> Path:
        return self.root / "deltas.csv"

    @property
    def templates_csv(self) -> Path:
        return self.root / "templates.csv"

    @property
    def comparisons_csv(self) -> Path:
        """Every paired test of the report, one row (the ledger: `measure.report.ledger`)."""
        return self.root / "comparisons.csv"

    @property
    def causal_csv(self) -> Path:
        """What each region does (`interpret --effects`), every contrast with both sides."""
        return self.root / "causal.csv"

    @property
    def accuracy_png(self) -> Path:
        return self.root / "accuracy.png"

    @property
    def deltas_png(self) -> Path:
        return self.root / "deltas.png"

    @property
    def attention_png(self) -> Path:
        return self.root / "attention.png"

    @property
    def interpret(self) -> Path:
        """Where `interpret` writes: records.jsonl (the source of truth), regions.csv, heat maps."""
        return self.root / "interpret"

    @property
    def attention(self) -> Path:
        return self.interpret / "records.jsonl"

    def attention_shard(self, index: int, count: int) -> Path:
        """What `interpret --shard index/count` appends to (read with every other shard's)."""
        return self.interpret / f"records.{index}-of-{count}.jsonl"

    @property
    def attention_files(self) -> list[Path]:
        """records.jsonl and every shard's, read as one."""
        return [self.attention, *sorted(self.interpret.glob("records.*-of-*.jsonl"))]

    @property
    def effects_csv(self) -> Path:
        """`interpret --effects`: each region's tokens removed inside the model, against baselines."""
        return self.interpret / "effects.csv"

    @property
    def regions_csv(self) -> Path:
        return self.interpret / "regions.csv"

    def heatmap(self, model: str, question_id: str, variant: str, layers: str) -> Path:
        return self.interpret / "heatmaps" / model / question_id / f"{variant}.{layers}.png"

    def effect_map(self, model: str, question_id: str, variant: str) -> Path:
        """The occlusion map beside the heat maps (`interpret --effects`)."""
        return self.heatmap(model, question_id, variant, "effect")


@dataclass(frozen=True)
class AdapterLayout:
    """Paths inside one LoRA adapter directory (a PEFT directory plus how it was trained)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "adapter_config.json"

    @property
    def train_args(self) -> Path:
        return self.root / "train_args.json"

    @property
    def weights(self) -> Path:
        return self.root / "adapter_model.safetensors"

    @property
    def loss_csv(self) -> Path:
        return self.root / "loss.csv"

    @property
    def loss_png(self) -> Path:
        return self.root / "loss.png"

    @property
    def tokens_png(self) -> Path:
        """The training examples' text lengths (a histogram)."""
        return self.root / "tokens.png"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"


@dataclass(frozen=True)
class ProfileLayout:
    """Paths inside one `measure profile` folder."""

    root: Path

    @property
    def json(self) -> Path:
        return self.root / "profile.json"

    @property
    def md(self) -> Path:
        return self.root / "profile.md"

    @property
    def latency_png(self) -> Path:
        """Warm and cold latency by frames sent, per model and dtype."""
        return self.root / "latency.png"

    @property
    def throughput_png(self) -> Path:
        """Requests per second by requests in flight, per model."""
        return self.root / "throughput.png"

    def server_log(self, model: str, dtype: str) -> Path:
        return self.root / "servers" / f"{model}-{dtype}.log"
