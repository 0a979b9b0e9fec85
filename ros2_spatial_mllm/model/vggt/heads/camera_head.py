"""VGGT camera head: camera token -> pose encoding absT_quaR_FoV [B, S, 9], refined iteratively.

Per iteration: embed the current estimate (a learned empty token at first) -> SiLU + Linear
-> (shift, scale, gate); adaLN-modulate the normed camera tokens, add them back, run the trunk
(transformer blocks over the S cameras), predict a delta with an MLP, accumulate. The FoV
entries go through ReLU, translation and quaternion stay linear.

Keys: token_norm, trunk.N.*, trunk_norm, empty_pose_tokens [1,1,9], embed_pose (9->D),
poseLN_modulation.1 (D->3D), pose_branch.fc1 (D->D/2), pose_branch.fc2 (D/2->9); D = 2C.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.block import Block
from ..layers.mlp import Mlp

POSE_ENCODING_DIM = 9  # translation (3) + quaternion XYZW (4) + FoV (h, w)


def activate_pose_encoding(raw: torch.Tensor) -> torch.Tensor:
    """raw [..., 9] -> [..., 9]: translation and quaternion linear, FoV through ReLU."""
    translation_quat, fov = raw[..., :7], raw[..., 7:]
    return torch.cat([translation_quat, F.relu(fov)], dim=-1)


class CameraHead(nn.Module):
    """list of aggregator outputs (last one used, [B, S, P, D]) -> list of pose encodings [B, S, 9]."""

    def __init__(
        self,
        dim_in: int = 2048,
        trunk_depth: int = 4,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        init_values: float = 0.01,
        num_iterations: int = 4,
    ) -> None:
        super().__init__()
        self.num_iterations = num_iterations
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk = nn.Sequential(
            *[Block(dim_in, num_heads, mlp_ratio=mlp_ratio, init_values=init_values) for _ in range(trunk_depth)]
        )
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, hidden_features=dim_in // 2, out_features=POSE_ENCODING_DIM)

    def forward(self, aggregated_tokens: List[torch.Tensor], num_iterations: int | None = None) -> List[torch.Tensor]:
        """aggregated_tokens[-1] [B, S, P, D] -> one activated pose encoding [B, S, 9] per iteration."""
        iterations = num_iterations or self.num_iterations
        camera_tokens = self.token_norm(aggregated_tokens[-1][:, :, 0])  # [B, S, D]
        batch, frames, _ = camera_tokens.shape
        estimate = None
        outputs = []
        for _ in range(iterations):
            if estimate is None:
                condition = self.embed_pose(self.empty_pose_tokens.expand(batch, frames, -1))
            else:
                condition = self.embed_pose(estimate.detach())
            shift, scale, gate = self.poseLN_modulation(condition).chunk(3, dim=-1)  # each [B, S, D]
            modulated = gate * (self.adaln_norm(camera_tokens) * (1 + scale) + shift) + camera_tokens
            refined = self.trunk(modulated)  # [B, S, D]
            delta = self.pose_branch(self.trunk_norm(refined))  # [B, S, 9]
            estimate = delta if estimate is None else estimate + delta
            outputs.append(activate_pose_encoding(estimate))
        return outputs
