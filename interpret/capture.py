"""Attention captured as the model computes it, without ever holding a layer's full L x L
matrix: an attention implementation of its own (transformers' `AttentionInterface`) that
computes each layer's output with SDPA, as the model would, and keeps only

- language layers: the last query row (the answer position) — softmax(q_last K^T / sqrt(d)),
  one (heads, L) row per layer;
- vision layers: per chunk (a frame group, attended within itself), the attention each patch
  receives: the mean over the chunk's queries of softmax(Q K^T / sqrt(d)), (heads, n).

Memory per layer is O(heads x L) for the language model, not O(heads x L^2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

NAME = "visual_cues_capture"


@dataclass
class Captured:
    llm: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (heads, L)
    vision: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # layer -> per chunk (heads, n)

    def clear(self) -> None:
        self.llm.clear()
        self.vision.clear()


CAPTURED = Captured()
# An attention knockout in force (`interpret.effects.knocked_out`): in these language layers,
# queries at or after `first_query` may not attend to `keys` (prompt positions).
KNOCKOUT: dict[str, Any] = {}


def knockout_mask(module: Any, query: torch.Tensor, key: torch.Tensor, mask: Any) -> Any:
    """`mask` (None: causal) with the knockout in force applied, when it applies to `module`;
    a causal mask made explicit when the queries continue a cache (SDPA's `is_causal` would
    align them with the first keys, not the last)."""
    q, n = query.shape[-2], key.shape[-2]
    knocked = bool(KNOCKOUT) and module.layer_idx in KNOCKOUT["layers"]
    if mask is None and (knocked or 1 < q < n):
        mask = torch.full((q, n), float("-inf"), dtype=query.dtype).triu(n - q + 1)[None, None]
    if not knocked:
        return mask
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=query.dtype).masked_fill(~mask, float("-inf"))
    mask = mask.clone()
    rows = torch.arange(n - q, n) >= KNOCKOUT["first_query"]  # each query's absolute position
    block = mask[..., rows, :]
    block[..., KNOCKOUT["keys"]] = float("-inf")
    mask[..., rows, :] = block
    return mask


def _capture(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bias = getattr(module, "planted_bias", None)  # a planted model (tests): every query drawn to some keys
    if bias is not None:
        n = key.shape[-2]
        causal = torch.full((n, n), float("-inf"), dtype=query.dtype).triu(1)
        attention_mask = (causal + bias.to(query.dtype))[None, None, -query.shape[-2] :, :]
    if getattr(module, "is_causal", False):
        attention_mask = knockout_mask(module, query, key, attention_mask)
    out, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
    )
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if getattr(module, "is_causal", False):  # a language layer: the answer position's row
        k = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        row = (query[:, :, -1:, :].float() @ k.float().transpose(-1, -2)) * scale
        if bias is not None:
            row = row + bias.float()
        CAPTURED.llm[module.layer_idx] = torch.softmax(row, dim=-1)[0, :, 0].detach().cpu()
    elif hasattr(module, "vision_layer"):  # a vision layer, one chunk (frame group)
        weights = torch.softmax((query.float() @ key.float().transpose(-1, -2)) * scale, dim=-1)
        CAPTURED.vision.setdefault(module.vision_layer, []).append(weights[0].mean(dim=1).detach().cpu())
    return out, None


def register() -> str:
    """Register the capturing implementation (once) and return its name, for
    `from_pretrained(..., attn_implementation=...)`."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, _capture)
    return NAME


def label_vision_layers(model: Any) -> int:
    """Number the vision encoder's attention modules (they carry no layer index); returns how many."""
    blocks = model.model.visual.blocks
    for i, block in enumerate(blocks):
        block.attn.vision_layer = i
    return len(blocks)
