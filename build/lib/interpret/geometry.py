"""Qwen-VL's token <-> pixel geometry (verified: tests/test_interpret.py changes one pixel
block and sees exactly the token named here change).

A video is cut into groups of `temporal` frames (2), each frame into `patch` x `patch` pixel
patches (16); the vision encoder sees the patches of a group in merge-window order (every 2 x 2
window of patches together), and the language model sees one token per window (`merge` 2): a
token covers `temporal` frames x a (patch*merge)-pixel square block, in row-major order, one
run of tokens per group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    groups: int  # temporal groups (frames sent / temporal)
    rows: int  # patch rows of a frame
    cols: int  # patch columns
    patch: int = 16
    merge: int = 2
    temporal: int = 2

    @classmethod
    def of(cls, grid_thw, patch: int, merge: int, temporal: int) -> Grid:
        t, h, w = (int(v) for v in grid_thw)
        return cls(t, h, w, patch, merge, temporal)

    @property
    def token_rows(self) -> int:
        return self.rows // self.merge

    @property
    def token_cols(self) -> int:
        return self.cols // self.merge

    @property
    def pixels(self) -> tuple[int, int]:
        """(W, H) of a frame as the model sees it (the processor's resize of the frames sent)."""
        return self.cols * self.patch, self.rows * self.patch

    def token_block(self, i: int) -> tuple[int, int, int]:
        """The i-th video token of the prompt: (group, token row, token column)."""
        per = self.token_rows * self.token_cols
        return i // per, (i % per) // self.token_cols, i % self.token_cols

    def token_pixels(self, row: int, col: int) -> tuple[slice, slice]:
        """The pixel block (y, x) of a token in its frames."""
        side = self.patch * self.merge
        return slice(row * side, (row + 1) * side), slice(col * side, (col + 1) * side)

    def patch_cell(self, j: int) -> tuple[int, int]:
        """The j-th patch of a group as the vision encoder orders it: (patch row, patch column)."""
        m = self.merge
        window, inner = divmod(j, m * m)
        wr, wc = divmod(window, self.token_cols)
        return wr * m + inner // m, wc * m + inner % m

    def frames(self, group: int) -> slice:
        """The sent frames a group covers."""
        return slice(group * self.temporal, (group + 1) * self.temporal)


def video_positions(input_ids, video_token_id: int) -> np.ndarray:
    """Positions of the video tokens in a prompt, in order."""
    ids = np.asarray(input_ids).reshape(-1)
    return np.flatnonzero(ids == video_token_id)


def token_maps(weights: np.ndarray, grid: Grid) -> np.ndarray:
    """Per-token values (one per video token, prompt order) as (groups, token rows, token cols)."""
    return np.asarray(weights, dtype=float).reshape(grid.groups, grid.token_rows, grid.token_cols)


def patch_maps(received: np.ndarray, grid: Grid) -> np.ndarray:
    """Per-patch values of every group (encoder order) as (groups, patch rows, patch cols)."""
    out = np.zeros((grid.groups, grid.rows, grid.cols))
    for g in range(grid.groups):
        for j, value in enumerate(received[g]):
            r, c = grid.patch_cell(j)
            out[g, r, c] = value
    return out
