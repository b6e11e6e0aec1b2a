"""Where the pixels are normalised. vLLM (0.32, `--mm-device-do-normalize`, on by default for
Qwen3-VL) skips the processor's rescale and normalisation and applies them on the device, with
ONE mean and std: the image processor's, to videos as well. A model whose video processor
normalises otherwise (the tiny models built before this check: CLIP's mean for images, 0.5 for
videos) then sees other pixels than it was trained on, and than transformers gives it (measured:
first-token log-probs 0.4-3.8 nats apart, docs/interpret.md). Such a model is served with the
processor normalising each modality itself."""

from __future__ import annotations

from pathlib import Path

from core.files import read_json

KEYS = ("do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")
OFF = ["--no-mm-device-do-normalize"]


def settings(model: str) -> tuple[dict, dict] | None:
    """(image, video) normalisation of a local model's processor; None when it has no video
    processor config here (a hub id, a model without video)."""
    folder = Path(model)
    if (folder / "processor_config.json").is_file():
        both = read_json(folder / "processor_config.json")
        image, video = both.get("image_processor"), both.get("video_processor")
    else:
        image, video = (_read(folder / f) for f in ("preprocessor_config.json", "video_preprocessor_config.json"))
    if not image or not video:
        return None
    return ({k: image.get(k) for k in KEYS}, {k: video.get(k) for k in KEYS})


def _read(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None


def argv(model: str) -> list[str]:
    """vLLM's arguments for where `model`'s pixels are normalised: on the device (vLLM's
    default) unless its image and video processors normalise differently."""
    both = settings(model)
    return OFF if both is not None and both[0] != both[1] else []
