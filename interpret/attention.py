"""One prediction asked again with attention captured: the answer position's row in every
language layer and each patch's received attention in every vision layer, turned into region
masses (and kept as maps for the pictures)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from interpret.capture import CAPTURED
from interpret.geometry import Grid, patch_maps, token_maps, video_positions
from interpret.regions import REGIONS, block_shares


@dataclass
class Attention:
    """What one forward pass saw, mean over heads."""

    llm: dict[int, np.ndarray]  # layer -> (groups, token rows, token cols): share of the row given each video token
    video_share: dict[int, float]  # layer -> share of the answer position's attention on video tokens
    vision: dict[int, np.ndarray]  # layer -> (groups, patch rows, patch cols): mean received, per group
    logits: torch.Tensor  # the next-token logits at the answer position
    tokens: int  # prompt length


def grid_of(model: Any, enc: dict) -> Grid:
    vc = model.config.vision_config
    return Grid.of(enc["video_grid_thw"][0], vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size)


def video_features(model: Any, enc: dict) -> Any:
    """The vision tower's output for `enc`'s video (merger and deepstack levels), to pass again as
    `mm_encoder_outputs`: a clip's questions share it, so the tower runs once per clip."""
    inner = model.model if hasattr(model, "model") and hasattr(model.model, "get_video_features") else model
    device = next(model.parameters()).device
    with torch.no_grad():
        return inner.get_video_features(
            enc["pixel_values_videos"].to(device), enc["video_grid_thw"].to(device), return_dict=True
        )


def model_inputs(model: Any, enc: dict, features: Any = None) -> dict:
    """`enc` on the model's device; with the clip's `features`, passed as `mm_encoder_outputs` in
    place of the pixels (the vision tower is not run again)."""
    device = next(model.parameters()).device
    if features is None:
        return {k: v.to(device) for k, v in enc.items()}
    inputs = {k: v.to(device) for k, v in enc.items() if k != "pixel_values_videos"}
    return inputs | {"mm_encoder_outputs": {"video": features}}


def forward(model: Any, enc: dict, features: Any = None) -> Attention:
    """One pass with the capturing attention; the captured rows become maps. With the clip's
    `features` the vision tower is not run again (nothing captured in it: `vision` is empty)."""
    CAPTURED.clear()
    with torch.no_grad():
        out = model(**model_inputs(model, enc, features))
    grid = grid_of(model, enc)
    positions = video_positions(enc["input_ids"], model.config.video_token_id)
    llm, share = {}, {}
    for layer, row in sorted(CAPTURED.llm.items()):
        mean = row.mean(dim=0).numpy()
        share[layer] = float(mean[positions].sum())
        llm[layer] = token_maps(mean[positions] / max(share[layer], 1e-12), grid)
    vision = {
        layer: patch_maps(np.stack([c.mean(dim=0).numpy() for c in chunks]), grid)
        for layer, chunks in sorted(CAPTURED.vision.items())
    }
    return Attention(llm, share, vision, out.logits[0, -1].float().cpu(), int(enc["input_ids"].shape[1]))


def masses(weights: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Per region, the share of `weights` (groups x blocks, summing to 1) on it: each block's
    weight split over the regions by its pixel shares (groups x 4 x blocks)."""
    w = weights / max(weights.sum(), 1e-12)
    return np.einsum("grc,gkrc->k", w, shares)


def normalised(question: np.ndarray, generic: np.ndarray) -> np.ndarray:
    """The question's attention over the generic question's on the same clip (the sinks both
    share divided out), renormalised to sum 1."""
    ratio = question / np.maximum(generic, 1e-12)
    return ratio / max(ratio.sum(), 1e-12)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation of two maps (ties averaged)."""
    ra, rb = (np.argsort(np.argsort(x.ravel(), kind="stable"), kind="stable").astype(float) for x in (a, b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def pooled(vision: np.ndarray, merge: int) -> np.ndarray:
    """A vision map (groups x patch rows x cols) summed over merge windows: one value per token."""
    g, h, w = vision.shape
    return vision.reshape(g, h // merge, merge, w // merge, merge).sum(axis=(2, 4))


def _regions(
    source: str, layer: str, mass: np.ndarray, norm: np.ndarray | None, area: np.ndarray, share: float | None
) -> list[dict]:
    """One row per region."""
    return [
        dict(
            source=source,
            layer=layer,
            region=r,
            mass=float(mass[i]),
            mass_norm=None if norm is None else float(norm[i]),
            area=float(area[i]),
            video_share=share,
        )
        for i, r in enumerate(REGIONS)
    ]


def region_rows(att: Attention, generic: Attention, shares: np.ndarray, grid: Grid) -> list[dict]:
    """The region rows of one prediction for one set of region shares (frames x 4 x h x w):
    per language layer and their mean (raw and normalised by the generic question), per vision
    layer and their mean, and the language-vs-vision rank agreement per group."""
    tokens = block_shares(shares, grid, grid.patch * grid.merge)
    patches = block_shares(shares, grid, grid.patch)
    area = shares.mean(axis=(0, 2, 3))
    rows = []
    llm_mean = np.mean(list(att.llm.values()), axis=0)
    gen_mean = np.mean(list(generic.llm.values()), axis=0)
    layers = [(str(k), v, generic.llm[k], att.video_share[k]) for k, v in att.llm.items()]
    layers.append(("mean", llm_mean, gen_mean, float(np.mean(list(att.video_share.values())))))
    for name, weights, gen, share in layers:
        norm = masses(normalised(weights, gen), tokens)
        rows += _regions("llm", name, masses(weights, tokens), norm, area, share)
    vis_mean = np.mean(list(att.vision.values()), axis=0)
    for name, received in [*((str(k), v) for k, v in att.vision.items()), ("mean", vis_mean)]:
        rows += _regions("vision", name, masses(received, patches), None, area, None)
    rho = np.nanmean([spearman(llm_mean[g], pooled(vis_mean, grid.merge)[g]) for g in range(grid.groups)])
    rows.append(
        dict(
            source="agreement", layer="mean", region="all", mass=float(rho), mass_norm=None, area=1.0, video_share=None
        )
    )
    return rows
