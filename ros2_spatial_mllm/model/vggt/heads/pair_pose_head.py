"""Relative pose of consecutive frames read off a patch-matching cost volume (tiny preset only).

Not part of facebook/VGGT-1B. The tiny VGGT trained from random weights on the CPU learns depth
but its camera token never learns to relate frames: its camera head predicts the walks' average
turn whatever the images show (docs/frame_signal.md, sixth and seventh sprints). The same
aggregator's patch tokens do match across frames, so this head compares them explicitly: for
every patch of frame k+1 a soft match in frame k gives a flow vector, and a small point-set
network turns the flow field into the relative pose. `VGGTConfig.pair_pose_head` builds it;
`ros2_spatial_mllm.geometry.pair_poses_to_extrinsics` chains its output into cameras.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn


def patch_grid(grid_hw: Tuple[int, int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Patch centres in normalised image coordinates, row-major: [h*w, 2] (x, y) in [-1, 1]."""
    height, width = grid_hw
    ys = torch.linspace(-1.0, 1.0, height, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, width, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


class PairPoseHead(nn.Module):
    """patch tokens [B, S, N, D] (one aggregator layer, N = h*w patches per frame), grid (h, w)
    -> [B, S-1, 6]: rotation vector (radians) and translation (metres) of camera k+1 expressed
    in camera k (cam_k_from_cam_k+1, OpenCV axes), k = 0..S-2.

    Resolution-independent: the pose network sees per-patch (flow, position, match score)
    triples pooled over patches, never a fixed patch count."""

    def __init__(self, dim_in: int, proj_dim: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, proj_dim)  # descriptor space the matches are scored in
        # softmax temperature of the matches; learnt, starts at 0.1 (cosine scores in [-1, 1])
        self.log_temperature = nn.Parameter(torch.tensor(math.log(0.1)))
        self.point_mlp = nn.Sequential(nn.Linear(5, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.pose_mlp = nn.Sequential(
            nn.Linear(2 * hidden, 2 * hidden), nn.GELU(),
            nn.Linear(2 * hidden, 2 * hidden), nn.GELU(),
            nn.Linear(2 * hidden, 6),
        )

    def forward(self, patch_tokens: torch.Tensor, grid_hw: Tuple[int, int]) -> torch.Tensor:
        patches = patch_tokens.shape[2]
        if grid_hw[0] * grid_hw[1] != patches:
            raise ValueError(f"grid {grid_hw} does not hold {patches} patches")
        desc = F.normalize(self.proj(patch_tokens), dim=-1)                  # [B, S, N, d]
        # frame k is matched into frame k-1; frame 0 into frame S-1, a pair dropped at the end.
        # Scoring S pairs, not S-1, keeps an exported graph valid for a single frame (no
        # zero-size matmuls), which the geometry worker's first chunk can be.
        previous = torch.cat([desc[:, -1:], desc[:, :-1]], dim=1)            # [B, S, N, d]
        corr = desc @ previous.transpose(-1, -2)                             # [B, S, N(k), N(k-1)]
        weights = torch.softmax(corr / self.log_temperature.exp(), dim=-1)
        grid = patch_grid(grid_hw, patch_tokens.device, desc.dtype)          # [N, 2]
        flow = weights @ grid - grid                                         # [B, S, N, 2] expected shift
        score = corr.amax(dim=-1, keepdim=True)                              # [B, S, N, 1] best match
        point = torch.cat([flow, grid.expand_as(flow), score], dim=-1)       # [B, S, N, 5]
        feats = self.point_mlp(point)                                        # [B, S, N, hidden]
        pooled = torch.cat([feats.mean(dim=-2), feats.amax(dim=-2)], dim=-1)  # [B, S, 2*hidden]
        return self.pose_mlp(pooled)[:, 1:]                                  # [B, S-1, 6]
