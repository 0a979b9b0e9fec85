"""VGGT prediction heads implemented here: camera (pose encoding) and depth (DPT), and the
tiny preset's pair-pose read-out (not in VGGT-1B)."""

from .camera_head import CameraHead, activate_pose_encoding
from .dpt_head import DPTHead, activate_depth
from .pair_pose_head import PairPoseHead

__all__ = ["CameraHead", "DPTHead", "PairPoseHead", "activate_depth", "activate_pose_encoding"]
