"""What a region does, inside the model: its visual tokens removed at the language model's
input (token ablation) or hidden from the answer (attention knockout), against the same number
of random visual tokens and of the highest-norm ones.

- A region's tokens: the visual tokens (a merged patch block of a frame group) that overlap it
  at all (`interpret.regions`: cue strokes, box edges, the asked object, the rest; regions then
  overlap at their borders). The rule was fixed before looking at any effect: the vision tower
  mixes every pixel of a patch into its token and the merger mixes 2 x 2 patches, so a token
  that sees any of a region carries some of it.
- Ablation (Neo et al., ICLR 2025): those tokens' embeddings — the merger's output and each
  deepstack level's — replaced by the clip's mean visual token (in distribution: what an
  average token of this clip carries), passed to the model as its video features
  (transformers' `mm_encoder_outputs`), the vision tower run once.
- Knockout (Kaduri et al., CVPR 2025; "Map the Flow", ICLR 2026): the answer's positions (the
  last prompt position and the reply's tokens) may not attend to those tokens, in the language
  layers of one window: the early, middle or late third, or all layers.
- Baselines, each of as many tokens, all from outside the region (a baseline that shares the
  region's tokens is pulled toward its effect): RANDOM_DRAWS seeded draws of random tokens
  (their mean effect and its spread across draws), and the tokens of the highest embedding
  norm (attention sinks carry large norms).
- Outcome: the change in the log-probability of the run's answer and of the right answer (each
  choice's full reply, teacher-forced, end token included), and whether the preferred choice
  (the highest of those log-probabilities) changes.
- Each row records the tokens actually removed (counted from the ablated features, or the keys
  hidden), so a baseline of another size shows.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.prompt import targets
from core.records import Prediction
from interpret import capture
from interpret.attention import model_inputs, video_features
from interpret.geometry import Grid, token_maps
from interpret.regions import REGIONS, block_shares

RANDOM_DRAWS = 16  # draws of random tokens per removal: the baseline's mean and its spread
BATCH = 16  # ablated inputs per forward pass
WINDOWS = ("early", "middle", "late", "all")
COLUMNS = [
    "question_id",
    "video_id",
    "model",
    "variant",
    "type",
    "cue_of",
    "region",
    "method",
    "window",
    "tokens",
    "target",
    "d_answer",
    "d_right",
    "spread",
    "flipped",
]


def region_tokens(shares: np.ndarray, grid: Grid) -> dict[str, np.ndarray]:
    """Per region, the indices of the video tokens that overlap it at all (token order: group,
    token row, token column, as the prompt holds them); a share below 1e-6 is resampling's
    rounding, not overlap."""
    blocks = block_shares(shares, grid, grid.patch * grid.merge)  # (groups, 4, rows, cols)
    return {r: np.flatnonzero(blocks[:, i].reshape(-1) > 1e-6) for i, r in enumerate(REGIONS)}


def windows(layers: int) -> dict[str, set[int]]:
    """The language layers of each knockout window."""
    thirds = np.array_split(np.arange(layers), 3)
    return {"early": set(thirds[0].tolist()), "middle": set(thirds[1].tolist()), "late": set(thirds[2].tolist())} | {
        "all": set(range(layers))
    }


@dataclass
class Scorer:
    """One prediction's input, its video features computed once, and the choices' replies."""

    model: Any
    enc: dict
    features: Any  # the video's encoder output (merger output and deepstack features)
    replies: list[torch.Tensor]  # each choice's reply token ids, end token included
    video_positions: torch.Tensor  # where the video tokens are in the prompt

    @classmethod
    def of(cls, model: Any, tokenizer: Any, enc: dict, choices: list[str], fmt: str, features: Any = None) -> Scorer:
        """`features`: the clip's video features when known (`attention.video_features`)."""
        features = video_features(model, enc) if features is None else features
        eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
        replies = [
            torch.tensor(tokenizer(t, add_special_tokens=False).input_ids + [eos]) for t in targets(choices, fmt)
        ]
        positions = torch.nonzero(enc["input_ids"][0] == model.config.video_token_id).flatten()
        return cls(model, enc, features, replies, positions)

    @property
    def tokens(self) -> int:
        return int(self.features.pooler_output[0].shape[0])

    def embeddings(self) -> torch.Tensor:
        return self.features.pooler_output[0]

    def log_probs(self, features: Any = None) -> np.ndarray:
        """Each choice's reply log-probability (teacher-forced) with these video features: the
        prompt computed once, the replies continued from its cache side by side (right-padded:
        a reply's tokens never see the padding after them)."""
        longest = max(len(r) for r in self.replies)
        padded = torch.stack([torch.cat([r, r.new_full((longest - len(r),), r[-1])]) for r in self.replies])
        with torch.no_grad():
            out = self.model(**model_inputs(self.model, self.enc, features or self.features), use_cache=True)
            steps = [torch.log_softmax(out.logits[0, -1].float(), dim=-1).expand(len(self.replies), -1)[:, None]]
            if longest > 1:
                cache = copy.deepcopy(out.past_key_values)
                cache.batch_repeat_interleave(len(self.replies))
                more = self.model(input_ids=padded[:, :-1], past_key_values=cache).logits.float()
                steps.append(torch.log_softmax(more, dim=-1))
            lp = torch.cat(steps, dim=1).gather(2, padded[:, :, None])[..., 0]
        return np.array([float(lp[i, : len(r)].sum()) for i, r in enumerate(self.replies)])


def ablated(features: Any, tokens: np.ndarray) -> Any:
    """The video features with `tokens` replaced by the clip's mean token (every level)."""
    out = copy.copy(features)
    out.pooler_output = tuple(_mean_into(f, tokens) for f in features.pooler_output)
    out.deepstack_features = [tuple(_mean_into(f, tokens) for f in level) for level in features.deepstack_features]
    return out


def _mean_into(rows: torch.Tensor, tokens: np.ndarray) -> torch.Tensor:
    rows = rows.clone()
    rows[torch.as_tensor(tokens, dtype=torch.long)] = rows.mean(dim=0)
    return rows


@contextlib.contextmanager
def knocked_out(layers: set[int], keys: torch.Tensor, first_query: int) -> Iterator[None]:
    """While open, the capturing attention hides `keys` from every query at or after
    `first_query` in `layers` (language layers)."""
    capture.KNOCKOUT.update(layers=layers, keys=keys, first_query=first_query)
    try:
        yield
    finally:
        capture.KNOCKOUT.clear()


def random_tokens(pool: np.ndarray, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(pool, size=k, replace=False))


def targets_of(scorer: Scorer, region: np.ndarray, seed: int) -> dict[str, list[np.ndarray]]:
    """The region's tokens and its baselines of the same count, drawn from outside it (none when
    fewer tokens are left outside it than it holds)."""
    k, outside = len(region), np.setdiff1d(np.arange(scorer.tokens), region)
    out = {"region": [region]}
    if len(outside) >= k:
        norms = scorer.embeddings().norm(dim=-1).numpy()[outside]
        if math.comb(len(outside), k) <= RANDOM_DRAWS:  # every possible draw
            out["random"] = [np.array(c) for c in itertools.combinations(outside.tolist(), k)]
        else:
            out["random"] = [random_tokens(outside, k, seed + d) for d in range(RANDOM_DRAWS)]
        out["norm"] = [np.sort(outside[np.argsort(-norms, kind="stable")[:k]])]
    return out


def removed(features: Any, cut: Any) -> int:
    """How many video tokens an ablation changed (counted, not assumed)."""
    return int((cut.pooler_output[0] != features.pooler_output[0]).any(dim=-1).sum())


def ablations(scorer: Scorer, draws: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """(each draw's choices' log-probabilities, tokens it removed), the ablated inputs built a
    batch at a time (memory grows with the batch, not with the number of draws)."""
    done = [_batch(scorer, draws[i : i + BATCH]) for i in range(0, len(draws), BATCH)]
    return np.concatenate([lp for lp, _ in done]), [n for _, counts in done for n in counts]


def _batch(scorer: Scorer, draws: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """One batch of ablations scored (its ablated inputs freed on return)."""
    cut = [ablated(scorer.features, d) for d in draws]
    lp = np.stack([reply_log_probs(scorer, cut, c) for c in range(len(scorer.replies))], axis=1)
    return lp, [removed(scorer.features, c) for c in cut]


def effects(
    pred: Prediction, scorer: Scorer, shares: np.ndarray, grid: Grid, cue: str, right: str, seed: int, methods: str
) -> list[dict]:
    """Every region x method x window x target of one prediction (`methods`: ablation alone, or
    all), as rows of effects.csv."""
    base = ablations(scorer, [np.array([], dtype=int)])[0][0]  # the same computation, nothing removed
    answer, correct = pred.choices.index(pred.reply), pred.choices.index(right)
    preferred = int(base.argmax())
    layers = windows(scorer.model.config.text_config.num_hidden_layers)
    rows = []
    for region, tokens in region_tokens(shares, grid).items():
        if not len(tokens) or len(tokens) >= scorer.tokens:
            continue
        for target, draws in targets_of(scorer, tokens, seed).items():
            for method, window, lp, counts in removals(scorer, draws, layers, methods):
                rows.append(
                    {
                        "question_id": pred.question_id,
                        "video_id": pred.video_id,
                        "model": pred.model,
                        "variant": pred.variant,
                        "type": pred.type,
                        "cue_of": cue,
                        "region": region,
                        "method": method,
                        "window": window,
                        "tokens": float(np.mean(counts)),
                        "target": target,
                        "d_answer": float(np.mean(lp[:, answer]) - base[answer]),
                        "d_right": float(np.mean(lp[:, correct]) - base[correct]),
                        "spread": float(np.std(lp[:, correct])),
                        "flipped": float(np.mean(lp.argmax(axis=1) != preferred)),
                    }
                )
    return rows


WINDOW = (2, 2)  # token rows x columns of the occlusion window where no region gives its size


def window_size(tokens: np.ndarray, grid: Grid) -> tuple[int, int]:
    """A region's size in tokens (rows, columns): the largest extent it has in any frame group."""
    if not len(tokens):
        return WINDOW
    blocks = np.array([grid.token_block(int(t)) for t in tokens])
    extents = [np.ptp(blocks[blocks[:, 0] == g][:, 1:], axis=0) + 1 for g in np.unique(blocks[:, 0])]
    rows, cols = np.max(extents, axis=0)
    return int(rows), int(cols)


def centered(grid: Grid, size: tuple[int, int]) -> list[np.ndarray]:
    """Per video token (prompt order), the tokens of a window of `size` centred on it in its
    frame group, shifted inside the frame at the borders."""
    rows, cols = grid.token_rows, grid.token_cols
    h, w = min(size[0], rows), min(size[1], cols)
    out = []
    for t in range(grid.groups * rows * cols):
        g, r, c = grid.token_block(t)
        r0, c0 = min(max(r - h // 2, 0), rows - h), min(max(c - w // 2, 0), cols - w)
        out.append(np.array([(g * rows + r0 + i) * cols + c0 + j for i in range(h) for j in range(w)]))
    return out


def occlusion(scorer: Scorer, answer: int, grid: Grid, size: tuple[int, int] = WINDOW) -> np.ndarray:
    """Occlusion sensitivity (Zeiler & Fergus 2014) with a window of `size` tokens (the asked
    region's, when known): each token's value is the change in the run's answer's
    log-probability when the window centred on it is ablated (groups x token rows x token
    cols). Ablated inputs are built a batch at a time."""
    base = ablations(scorer, [np.array([], dtype=int)])[0][0, answer]
    lp, _ = ablations(scorer, centered(grid, size))
    return token_maps(lp[:, answer] - base, grid)


def found(occluded: np.ndarray, region: np.ndarray) -> bool:
    """The known-answer check of one occlusion map: its most effective token (the largest drop)
    is one of the region's tokens."""
    return bool(len(region)) and int(np.argmin(np.asarray(occluded).reshape(-1))) in set(region.tolist())


def reply_log_probs(scorer: Scorer, variants: list[Any], choice: int) -> np.ndarray:
    """`choice`'s reply log-probability under each of `variants` (video features), one batch:
    the prompt and the reply, teacher-forced, side by side."""
    reply, n, prompt = scorer.replies[choice], len(variants), int(scorer.enc["input_ids"].shape[1])
    batch = {"video_grid_thw": scorer.enc["video_grid_thw"].repeat(n, 1)}
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in scorer.enc:
            more = reply[:-1] if key == "input_ids" else torch.full_like(reply[:-1], int(key == "attention_mask"))
            batch[key] = torch.cat([scorer.enc[key][0], more])[None].expand(n, -1)
    video = copy.copy(variants[0])
    video.pooler_output = tuple(v.pooler_output[0] for v in variants)
    video.deepstack_features = [
        tuple(v.deepstack_features[k][0] for v in variants) for k in range(len(video.deepstack_features))
    ]
    with torch.no_grad():
        logits = scorer.model(**batch, mm_encoder_outputs={"video": video}).logits[:, prompt - 1 :].float()
    return torch.log_softmax(logits, -1).gather(2, reply.expand(n, -1)[:, :, None])[..., 0].sum(1).numpy()


def removals(
    scorer: Scorer, draws: list[np.ndarray], layers: dict[str, set[int]], methods: str
) -> Iterator[tuple[str, str, np.ndarray, list[int]]]:
    """(method, window, each draw's choices' log-probabilities, tokens each removed) for ablation
    and every knockout window."""
    lp, counts = ablations(scorer, draws)
    yield "ablation", "all", lp, counts
    if methods != "all":
        return
    first = int(scorer.enc["input_ids"].shape[1]) - 1  # the answer position, then the reply's tokens
    for window in WINDOWS:
        lps = []
        for d in draws:
            with knocked_out(layers[window], scorer.video_positions[torch.as_tensor(d, dtype=torch.long)], first):
                lps.append(scorer.log_probs())
        yield "knockout", window, np.stack(lps), [len(d) for d in draws]
