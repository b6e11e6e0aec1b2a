"""vLLM and transformers on the same clip, in one process, step by step: is interpret's replica
computing what the server computes?

Both load the same Qwen3-VL checkpoint in --dtype (float32 by default). One seeded random clip
goes through vLLM (in this process, eager, as `serve run` would configure the pixels'
normalisation for this model) and through transformers. Prints, each with the largest absolute
difference and the scale of the values: the prompt's token ids, the normalised pixels, the patch
embedding, the position-embedding interpolation, the vision rotary table, every vision block,
the merger and each deepstack merger, then the first reply token's log-probabilities (the
vocabulary's top 20 as vLLM ranks them).

`--normalise device` forces vLLM's on-device normalisation, `--clip-images` gives the model the
image normalisation of the tiny models built before `serve.normalise` (CLIP's mean and std for
images, 0.5 for videos): together they reproduce what vLLM 0.32 served them (docs/interpret.md).

Usage: .venv/bin/python scripts/compare_vllm.py [--model data/models/tiny-vlm] [--normalise device] [--clip-images]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core import cli  # noqa: E402
from core.cli import command, option  # noqa: E402
from core.defaults import TINY_MODEL  # noqa: E402

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


@dataclass
class CompareOptions:
    model: Path = option(TINY_MODEL, "A local Qwen3-VL model dir.")
    dtype: str = option("float32", "Both sides' dtype.")
    frames: int = option(8, "Frames of the random clip.")
    size: str = option("160x128", "Frame size WxH.", metavar="WxH")
    normalise: Literal["served", "device", "processor"] = option(
        "served",
        "Where vLLM normalises pixels: as `serve run` sets it for this model, on the device, or in the processor.",
    )
    clip_images: bool = option(False, "Give the model CLIP's image normalisation (as the tiny models built before).")
    seed: int = option(0, "The clip's seed.")


def clip_images(model: Path, into: Path) -> Path:
    """A copy of `model` whose image processor normalises with CLIP's mean and std."""
    shutil.copytree(model, into)
    config = json.loads((into / "processor_config.json").read_text())
    config["image_processor"] |= {"image_mean": CLIP_MEAN, "image_std": CLIP_STD}
    (into / "processor_config.json").write_text(json.dumps(config))
    return into


def clip(o: CompareOptions):
    """(frames, their metadata): a seeded random clip."""
    import numpy as np

    w, h = (int(v) for v in o.size.split("x"))
    frames = np.random.default_rng(o.seed).integers(0, 256, (o.frames, h, w, 3), dtype=np.uint8)
    meta = {"total_num_frames": o.frames, "fps": 4.0, "frames_indices": list(range(o.frames))}
    return frames, meta | {"duration": o.frames / 4.0}


def on_device(o: CompareOptions, model: Path) -> bool:
    from serve import normalise

    return {"device": True, "processor": False, "served": not normalise.argv(str(model))}[o.normalise]


def vllm_steps(o: CompareOptions, model: Path, device: bool, text: str, frames, meta, grid) -> dict:
    """vLLM in this process: the first reply token's log-probs and every vision step's output."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # its log, not among our lines
    from serve import launch

    launch.ready()
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=str(model),
        dtype=o.dtype,
        enforce_eager=True,
        max_model_len=4096,
        limit_mm_per_prompt={"video": 1, "image": 1},
        mm_device_do_normalize=device,
    )
    seen: dict = {}
    llm.apply_model(lambda m: m.visual.register_forward_pre_hook(lambda _, args: seen.setdefault("pixels", args[0])))
    done = llm.generate(
        {"prompt": text, "multi_modal_data": {"video": (frames, meta | {"do_sample_frames": False})}},
        SamplingParams(max_tokens=1, temperature=0, logprobs=20),
    )[0]
    steps = llm.apply_model(lambda m: vllm_vision(m.visual, seen["pixels"], grid))[0]
    return steps | {
        "ids": done.prompt_token_ids,
        "logprobs": {k: v.logprob for k, v in done.outputs[0].logprobs[0].items()},
    }


def vllm_vision(vis, pixels, grid) -> dict:
    import torch

    out: dict = {}
    with torch.no_grad():
        h = vis.input_norm(pixels.to(vis.device), vis.dtype)
        out["pixels"] = h.clone()
        h = vis.patch_embed(h)
        out["patch embedding"] = h.clone()
        meta = vis.prepare_encoder_metadata(grid.tolist())
        out["position embedding"], out["vision rotary (cos)"] = meta["pos_embeds"].clone(), meta["rotary_pos_emb_cos"]
        h = (h + meta["pos_embeds"]).unsqueeze(1)
        keys = ("cu_seqlens", "rotary_pos_emb_cos", "rotary_pos_emb_sin", "max_seqlen", "sequence_lengths")
        for i, blk in enumerate(vis.blocks):
            h = blk(h, **{k: meta.get(k) for k in keys})
            out[f"vision block {i}"] = h.clone()
            if i in vis.deepstack_visual_indexes:
                at = vis.deepstack_visual_indexes.index(i)
                out[f"deepstack merger {at}"] = vis.deepstack_merger_list[at](h).clone()
        out["merger"] = vis.merger(h).clone()
    return out


def hf_steps(o: CompareOptions, model: Path, text: str, frames, meta) -> dict:
    """transformers: the same steps on the same clip, as interpret's replica computes them."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.video_utils import VideoMetadata

    processor = AutoProcessor.from_pretrained(model)
    enc = processor(
        text=[text],
        videos=[frames],
        video_metadata=[VideoMetadata(**meta)],
        do_sample_frames=False,
        return_tensors="pt",
    )
    hf = AutoModelForImageTextToText.from_pretrained(model, dtype=getattr(torch, o.dtype)).eval()
    out = hf_vision(hf.model.visual, enc["pixel_values_videos"], enc["video_grid_thw"])
    with torch.no_grad():
        out["logits"] = hf(**enc).logits[0, -1].float().log_softmax(-1)
    return out | {"ids": enc["input_ids"][0].tolist(), "grid": enc["video_grid_thw"]}


def hf_vision(vis, pixels, grid) -> dict:
    import torch
    from transformers.models.qwen3_vl import modeling_qwen3_vl as qwen

    out: dict = {"pixels": pixels}
    with torch.no_grad():
        h = out["patch embedding"] = vis.patch_embed(pixels)
        index, weight = qwen.get_vision_interpolation_indices_and_weights(
            grid,
            num_grid_per_side=vis.num_grid_per_side,
            mode=vis.interpolation_mode,
            align_corners=vis.interpolation_align_corners,
            spatial_merge_size=vis.config.spatial_merge_size,
            kwargs={},
        )
        pos = out["position embedding"] = (vis.pos_embed(index) * weight[:, :, None]).sum(1)
        seqlens, longest = qwen.get_vision_attention_seqlens(grid, vis.config, kwargs={})
        h = h + pos
        rotary = vis.rotary_pos_emb(h, qwen.get_vision_position_ids(grid, vis.spatial_merge_size, kwargs={}))
        out["vision rotary (cos)"] = rotary[0][:, : rotary[0].shape[-1] // 2]  # vLLM keeps one half
        for i, blk in enumerate(vis.blocks):
            h = out[f"vision block {i}"] = blk(h, cu_seqlens=seqlens, max_seqlen=longest, position_embeddings=rotary)
            if i in vis.deepstack_visual_indexes:
                at = vis.deepstack_visual_indexes.index(i)
                out[f"deepstack merger {at}"] = vis.deepstack_merger_list[at](h)
        out["merger"] = vis.merger(h)
    return out


def line(name: str, a, b) -> str:
    a, b = a.float().reshape(-1), b.float().reshape(-1)
    return f"{name}: max |diff| {(a - b).abs().max().item():.3g} (values up to {b.abs().max().item():.3g})"


app = cli.app(__doc__)


@command(app, CompareOptions, callback=True)
def compare(o: CompareOptions) -> None:
    """One clip through vLLM and transformers, step by step."""
    from transformers import AutoProcessor

    with tempfile.TemporaryDirectory() as tmp:
        model = clip_images(o.model, Path(tmp) / "model") if o.clip_images else o.model
        processor = AutoProcessor.from_pretrained(model)
        chat = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What is happening?"}]}]
        text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        frames, meta = clip(o)
        device = on_device(o, model)
        hf = hf_steps(o, model, text, frames, meta)
        vl = vllm_steps(o, model, device, text, frames, meta, hf["grid"])
    print(f"model {o.model} ({o.dtype}), pixels normalised {'on the device' if device else 'by the processor'}")
    print(f"prompt token ids: {'same' if vl['ids'] == hf['ids'] else 'DIFFERENT'} ({len(hf['ids'])})")
    for name in [k for k in hf if k in vl and k != "ids"]:
        print(line(name, vl[name], hf[name]))
    gap = max(abs(hf["logits"][k].item() - v) for k, v in vl["logprobs"].items())
    print(f"first reply token, log-probs of vLLM's top 20: max |diff| {gap:.3g} nats")


if __name__ == "__main__":
    cli.main(app)
