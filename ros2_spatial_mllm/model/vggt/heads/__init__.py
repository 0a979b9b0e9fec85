"""VGGT prediction heads implemented here: camera (pose encoding) and depth (DPT)."""

from .camera_head import CameraHead, activate_pose_encoding
from .dpt_head import DPTHead, activate_depth

__all__ = ["CameraHead", "DPTHead", "activate_depth", "activate_pose_encoding"]
