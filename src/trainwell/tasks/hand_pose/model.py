"""2D → 3D lifting network: the residual MLP of Martinez et al. (2017), "A simple yet effective baseline".

Input: the visible 2D keypoints in pixels, their visibility and the camera intrinsics. The network
first removes the camera and its roll about the optical axis (:func:`lifting_features`), so the same
weights serve any focal length and principal point, and in-plane rotations need not be learnt.
Output: root(wrist)-relative 3D joints in the camera axes, millimetres, plus the same from an auxiliary
head after the first residual block (deep supervision).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from trainwell.tasks.hand_pose.skeleton import NUM_JOINTS, ROOT
from trainwell.tasks.hand_pose.synthetic import pixels_to_normalized

NUM_FEATURES = NUM_JOINTS * 3 + 3
"""Per sample: 21 × 2 centred, scale-normalised coordinates, 21 visibility flags, centre (2), log spread (1)."""


@dataclass
class LiftingNetConfig:
    """``task.model``: size of the lifting network."""

    hidden: int = 512
    """Width of every hidden layer."""
    num_blocks: int = 2
    """Residual blocks (each: two Linear → norm → ReLU → Dropout layers and a skip connection)."""
    dropout: float = 0.0
    """Dropout probability after every hidden activation (0: synthetic data is plentiful, nothing to regularise)."""
    norm: Literal["batch", "layer"] = "batch"
    """Normalisation after each hidden Linear: BatchNorm1d (as in Martinez et al.) or LayerNorm."""
    output_scale_mm: float = 100.0
    """The output layers predict millimetres / this, so their targets are of order 1."""


_CHAIN_LEVEL = [0] + [level for _ in range(5) for level in (1, 2, 3, 4)]
"""Bones between each joint and the wrist (0 wrist, 1 CMC/MCP … 4 tip): weights of the hand's 2D axis."""


def lifting_features(
    keypoints_2d_px: torch.Tensor, visibility: torch.Tensor, intrinsics: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-independent input features ``(B, 66)`` and the in-plane rotation taken out of them.

    1. Pixels → normalised image coordinates ``((u - cx) / fx, (v - cy) / fy)`` (the camera is gone).
    2. Roll: rotate them about the optical axis so that the hand's 2D axis — visible joints weighted by
       their distance from the wrist in bones, relative to the visible centroid — points along +x. A
       rotation about the optical axis is exact in normalised coordinates, so the network predicts in
       this canonical frame and :func:`unroll` turns the prediction back: the model is equivariant to
       camera roll by construction instead of having to learn it.
    3. Centre on the mean of the *visible* keypoints and divide by their RMS distance from it (the hand's
       apparent size), so the pose shape reads the same at any distance; invisible ones become 0.
    4. Append the visibility flags, the centre (where in the field of view the hand is: perspective) and
       the log of the apparent size (how far away the hand probably is).

    Args:
        keypoints_2d_px: ``(B, 21, 2)`` pixel coordinates (values at invisible joints are ignored).
        visibility: ``(B, 21)`` 1 where observed, 0 otherwise.
        intrinsics: ``(B, 3, 3)`` pinhole camera matrices, pixels.

    Returns:
        ``features (B, 66)`` and ``roll (B, 2)``: cosine and sine of the angle the input was rotated *by*
        (negated), i.e. the canonical frame is the camera frame turned by ``-angle`` about z.
    """
    mask = visibility.unsqueeze(-1)
    normalized = pixels_to_normalized(keypoints_2d_px, intrinsics) * mask
    count = mask.sum(dim=1).clamp_min(1.0)  # (B, 1)
    centre = normalized.sum(dim=1) / count  # (B, 2)
    centred = (normalized - centre.unsqueeze(1)) * mask
    level = torch.tensor(_CHAIN_LEVEL, dtype=centred.dtype, device=centred.device).unsqueeze(-1)
    axis = (centred * level).sum(dim=1)  # (B, 2)
    length = torch.linalg.vector_norm(axis, dim=-1, keepdim=True)
    defined = length > 1e-9  # no visible joint beyond the centroid: keep the camera's own orientation
    cos = torch.where(defined, axis[:, :1] / length.clamp_min(1e-9), torch.ones_like(length))
    sin = torch.where(defined, axis[:, 1:] / length.clamp_min(1e-9), torch.zeros_like(length))
    roll = torch.cat((cos, sin), dim=1)
    centre, centred = _rotate_xy(centre, cos, -sin), _rotate_xy(centred, cos.unsqueeze(1), -sin.unsqueeze(1))
    spread = torch.sqrt((centred.square().sum(dim=(1, 2)) / count.squeeze(-1)).clamp_min(1e-8)).unsqueeze(-1)
    shape = centred / spread.unsqueeze(-1)
    return torch.cat((shape.flatten(1), visibility, centre, torch.log(spread)), dim=1), roll


def _rotate_xy(points: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first two coordinates of ``points`` ``(..., ≥2)`` by the angle with this cos/sin."""
    x, y = points[..., 0], points[..., 1]
    rotated = torch.stack((cos.squeeze(-1) * x - sin.squeeze(-1) * y, sin.squeeze(-1) * x + cos.squeeze(-1) * y), -1)
    return torch.cat((rotated, points[..., 2:]), dim=-1)


def unroll(joints_mm: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Joints ``(B, J, 3)`` predicted in the canonical frame back in the camera frame (rotate about z)."""
    return _rotate_xy(joints_mm, roll[:, None, :1], roll[:, None, 1:])


def _norm(kind: str, width: int) -> nn.Module:
    return nn.BatchNorm1d(width) if kind == "batch" else nn.LayerNorm(width)


class _Layer(nn.Sequential):
    """Linear → norm → ReLU → Dropout."""

    def __init__(self, width_in: int, width_out: int, cfg: LiftingNetConfig) -> None:
        super().__init__(nn.Linear(width_in, width_out), _norm(cfg.norm, width_out), nn.ReLU(), nn.Dropout(cfg.dropout))


class ResidualBlock(nn.Module):
    """Two hidden layers with a skip connection around them."""

    def __init__(self, cfg: LiftingNetConfig) -> None:
        super().__init__()
        self.layers = nn.Sequential(_Layer(cfg.hidden, cfg.hidden, cfg), _Layer(cfg.hidden, cfg.hidden, cfg))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class HandLiftingNet(nn.Module):
    """Lift 2D keypoints to root-relative 3D joints (mm), with an auxiliary head after the first block.

    Example:
        >>> net = HandLiftingNet(LiftingNetConfig(hidden=64, num_blocks=2)).eval()
        >>> kp, vis, K = torch.rand(4, 21, 2) * 256, torch.ones(4, 21), torch.eye(3).expand(4, 3, 3)
        >>> out = net(kp, vis, K)
        >>> out["joints_mm"].shape, out["aux_joints_mm"].shape
        (torch.Size([4, 21, 3]), torch.Size([4, 21, 3]))
    """

    def __init__(self, cfg: LiftingNetConfig) -> None:
        super().__init__()
        if cfg.num_blocks < 1:
            raise ValueError(
                f"task.model.num_blocks must be at least 1 (the aux head follows block 1); got {cfg.num_blocks}."
            )
        self.output_scale_mm = cfg.output_scale_mm
        self.stem = _Layer(NUM_FEATURES, cfg.hidden, cfg)
        self.blocks = nn.ModuleList(ResidualBlock(cfg) for _ in range(cfg.num_blocks))
        self.head = nn.Linear(cfg.hidden, (NUM_JOINTS - 1) * 3)
        self.aux_head = nn.Linear(cfg.hidden, (NUM_JOINTS - 1) * 3)

    def _joints_mm(self, head: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """``(B, 21, 3)``: the 20 predicted joints in mm, with the root inserted as exactly 0."""
        rest = head(x).view(x.shape[0], NUM_JOINTS - 1, 3) * self.output_scale_mm
        root = rest.new_zeros(x.shape[0], 1, 3)
        return torch.cat((rest[:, :ROOT], root, rest[:, ROOT:]), dim=1)

    def forward(
        self, keypoints_2d_px: torch.Tensor, visibility: torch.Tensor, intrinsics: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Predict ``{"joints_mm", "aux_joints_mm"}``, each ``(B, 21, 3)`` root-relative, camera axes, mm."""
        features, roll = lifting_features(keypoints_2d_px, visibility, intrinsics)
        x = self.stem(features)
        aux = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 0:
                aux = self._joints_mm(self.aux_head, x)
        assert aux is not None
        return {"joints_mm": unroll(self._joints_mm(self.head, x), roll), "aux_joints_mm": unroll(aux, roll)}
