"""An RGB-D crop → 21 joints (2D, 3D) + mesh vertices network, in plain PyTorch.

torchvision (and timm) do not import beside this build of torch, so the backbone is written here: a small
ResNet (BasicBlocks, BatchNorm — convertible with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``) of 3 or 4
stages, whose deepest features are upsampled FPN-style into a stride-4 head with a UNet-style skip from stride 4.

**Joint head: 2.5D heatmaps with soft-argmax** (integral regression, Sun et al. 2018; Iqbal et al. 2018), not
direct regression. Per joint, a heatmap (stride 4, or 2 with ``heatmap_stride``) gives the 2D keypoint as its
soft-argmax (sub-pixel, differentiable, and translation-equivariant — a crop shifted by jitter moves the peak, not
the weights' meaning) and a depth map read under the same heatmap gives the joint's depth relative to the wrist.
The wrist's absolute depth is the crop's reference depth (median of the valid depth pixels — from the input, so it
exists at test time) plus the wrist's own depth map read under its heatmap (a local readout: the depth input there,
plus the step from the skin to the joint inside it) plus a regressed global offset; the ``root`` loss trains it
against the true wrist in camera coordinates. Back-projection with the crop's intrinsics then gives camera-space
joints, so the 3D prediction inherits the 2D one's pixel accuracy and the depth channel's metric scale; direct
regression must learn the camera and the image position by heart and is markedly less accurate at this size.

What the demo's options add (``configs/hand_pose/synthetic_rgbd.yaml``; each measured in docs/hand_pose.md):
a stride-16 stage and ``global_context`` (the pooled deepest features added to every head cell), because naming a
finger is a question about the whole hand and the 3-stage receptive field barely spans the crop; ``refine_width``,
an MLP that corrects the 2.5D joints from all of them together, their heatmap peaks and the pooled features — a
learned hand prior for hidden and ambiguous joints, which per-joint heatmaps cannot express; and
``vertex_head: skinned``, the pack's mesh skinned to the predicted joints instead of regressed.

Inputs: ``rgb (B, 3, H, W)`` in [0, 1], ``depth_mm (B, 1, H, W)`` (0 = no return), ``intrinsics (B, 3, 3)`` of the
crop. Outputs (mm, camera axes, root-relative unless noted): ``joints_mm (B, 21, 3)``, ``keypoints_2d_px
(B, 21, 2)`` crop pixels, ``root_depth_mm (B,)`` absolute, ``root_cam_mm (B, 3)`` the wrist in the camera frame
(its keypoint back-projected at ``root_depth_mm``), ``vertices_mm (B, V, 3)``, ``aux_joints_mm (B, 21, 3)``
(direct regression from the pooled encoder features: deep supervision, the ``aux`` loss), ``heatmap_logits
(B, 21, H/s, W/s)`` at ``s = heatmap_stride`` (for the ``heatmap`` loss: soft-argmax alone learns slowly from
scratch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from trainwell.tasks.hand_pose import skeleton as S
from trainwell.tasks.hand_pose.skeleton import NUM_JOINTS, ROOT
from trainwell.tasks.hand_pose.surface import NUM_VERTICES, hand_vertices

RGB_MEAN, RGB_STD = 0.5, 0.25
DEPTH_SCALE_MM = 100.0
"""Depth enters the network as (depth - reference) / 100 mm; depth outputs are predicted in these units too."""


@dataclass
class RGBDNetConfig:
    """``task.model``: size of the RGB-D network."""

    width: int = 32
    """Channels of the first stage; stage ``k`` has ``width × 2^k``."""
    blocks: list[int] = field(default_factory=lambda: [1, 1, 1])
    """BasicBlocks per stage: 3 stages (strides 2, 4, 8) or 4 (a stride-16 stage too, for a receptive field that
    spans the crop — which finger is which is a question about the whole hand)."""
    head_width: int = 64
    """Channels of the stride-4 head."""
    heatmap_stride: int = 4
    """Stride of the heatmaps: 4, or 2 (one more upsampling step with a skip from the stride-2 stage: finer
    cells, for fingertips a few pixels apart)."""
    global_context: bool = False
    """Add the pooled deepest features to every cell of the head (each heatmap sees the whole crop)."""
    vertex_head: str = "mlp"
    """How the mesh is predicted: ``mlp`` (regressed from the pooled features and the joints) or ``skinned``
    (the pack's mesh skinned to the predicted joints, at the hand scale their bone lengths imply — no
    parameters, a mesh always consistent with the joints, and the vertex loss becomes a dense loss on them)."""
    refine_width: int = 0
    """Hidden width of an MLP that corrects the 2.5D joints from all of them together, their heatmap
    confidences and the pooled features (a learned hand prior for hidden and ambiguous joints); 0 = none."""


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """ResNet's two 3×3 convolutions with a skip (a 1×1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(self.conv1(x)) + self.skip(x))


def reference_depth_mm(depth_mm: torch.Tensor) -> torch.Tensor:
    """``(B,)`` median of the valid (non-zero) depth pixels of each crop; 500 mm where a crop has none."""
    flat = depth_mm.flatten(1)
    med = torch.where(flat > 0, flat, torch.full_like(flat, float("nan"))).nanmedian(dim=1).values
    return torch.nan_to_num(med, nan=500.0)


def soft_argmax_2d(logits: torch.Tensor, stride: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-argmax of ``(B, J, h, w)`` heatmap logits: ``(keypoints (B, J, 2) input pixels, weights (B, J, h, w))``.

    Cell ``(i, j)`` of a stride-``s`` map covers input pixels ``[s j, s (j + 1))``; its centre is ``s (j + ½)``.
    """
    b, j, h, w = logits.shape
    weights = torch.softmax(logits.flatten(2).float(), dim=-1).view(b, j, h, w)
    xs = (torch.arange(w, device=logits.device, dtype=weights.dtype) + 0.5) * stride
    ys = (torch.arange(h, device=logits.device, dtype=weights.dtype) + 0.5) * stride
    u = (weights.sum(dim=2) * xs).sum(dim=-1)
    v = (weights.sum(dim=3) * ys).sum(dim=-1)
    return torch.stack((u, v), dim=-1), weights


def back_project(keypoints_px: torch.Tensor, depth_mm: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Camera-space points ``(B, J, 3)`` mm from pixels ``(B, J, 2)``, depths ``(B, J)``, intrinsics ``(B, 3, 3)``."""
    x = (keypoints_px[..., 0] - intrinsics[:, 0, 2, None]) / intrinsics[:, 0, 0, None] * depth_mm
    y = (keypoints_px[..., 1] - intrinsics[:, 1, 2, None]) / intrinsics[:, 1, 1, None] * depth_mm
    return torch.stack((x, y, depth_mm), dim=-1)


def skinned_vertices(joints_mm: torch.Tensor) -> torch.Tensor:
    """The pack's mesh ``(B, V, 3)`` on joints ``(B, 21, 3)``, at the hand scale implied by their bone lengths.

    The scale is the mean ratio of the bone lengths to the template's (the generator's hand scale, up to the
    per-bone jitter).
    """
    scale = S.bone_lengths(joints_mm) / S.template_bone_lengths_mm(dtype=joints_mm.dtype, device=joints_mm.device)
    return hand_vertices(joints_mm, scale.mean(dim=-1))


class RGBDHandNet(nn.Module):
    """ResNet encoder + 2.5D heatmap head (+ refiner) + vertex and auxiliary heads (see the module docstring).

    Example:
        >>> net = RGBDHandNet(RGBDNetConfig(width=8, blocks=[1, 1, 1], head_width=16)).eval()
        >>> K = torch.tensor([[[200.0, 0, 32], [0, 200.0, 32], [0, 0, 1]]])
        >>> out = net(torch.rand(1, 3, 64, 64), 500 + torch.rand(1, 1, 64, 64), K)
        >>> out["joints_mm"].shape, out["vertices_mm"].shape
        (torch.Size([1, 21, 3]), torch.Size([1, 383, 3]))
    """

    def __init__(self, cfg: RGBDNetConfig) -> None:
        super().__init__()
        if len(cfg.blocks) not in (3, 4) or min(cfg.blocks) < 1:
            raise ValueError(f"task.model.blocks must list 3 or 4 stages of at least 1 block each; got {cfg.blocks}.")
        if cfg.vertex_head not in ("mlp", "skinned"):
            raise ValueError(f"task.model.vertex_head must be 'mlp' or 'skinned'; got '{cfg.vertex_head}'.")
        if cfg.heatmap_stride not in (2, 4):
            raise ValueError(f"task.model.heatmap_stride must be 2 or 4; got {cfg.heatmap_stride}.")
        self.stride = cfg.heatmap_stride
        w = cfg.width
        self.stem = _conv_bn(5, w, stride=2)  # rgb, depth, validity; stride 2
        widths, strides = [w, 2 * w, 4 * w, 8 * w][: len(cfg.blocks)], [1, 2, 2, 2][: len(cfg.blocks)]
        stages, c_in = [], w
        for width, stride, count in zip(widths, strides, cfg.blocks, strict=True):
            blocks = [BasicBlock(c_in, width, stride)] + [BasicBlock(width, width, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.ModuleList(stages)
        hw = cfg.head_width
        self.lateral = nn.Conv2d(widths[1], hw, 1)  # the UNet skip from stride 4
        self.top = nn.Conv2d(widths[2], hw, 1)
        self.top16 = nn.Conv2d(widths[3], hw, 1) if len(widths) == 4 else None
        self.context = nn.Linear(widths[-1], hw) if cfg.global_context else None
        self.head = nn.Sequential(_conv_bn(hw, hw), _conv_bn(hw, hw))
        if cfg.heatmap_stride == 2:
            self.lateral2, self.head2 = nn.Conv2d(widths[0], hw, 1), _conv_bn(hw, hw)
        self.heatmaps = nn.Conv2d(hw, NUM_JOINTS, 1)
        self.depths = nn.Conv2d(hw, NUM_JOINTS, 1)
        pooled = widths[-1] + hw
        self.refine = (
            nn.Sequential(
                nn.Linear(pooled + NUM_JOINTS * 4, cfg.refine_width),
                nn.ReLU(),
                nn.Linear(cfg.refine_width, cfg.refine_width),
                nn.ReLU(),
                nn.Linear(cfg.refine_width, NUM_JOINTS * 3),
            )
            if cfg.refine_width
            else None
        )
        self.root_depth = nn.Linear(pooled, 1)
        self.aux = nn.Linear(pooled, NUM_JOINTS * 3)
        self.vertices = (
            nn.Sequential(nn.Linear(pooled + NUM_JOINTS * 3, 256), nn.ReLU(), nn.Linear(256, NUM_VERTICES * 3))
            if cfg.vertex_head == "mlp"
            else None
        )

    def forward(self, rgb: torch.Tensor, depth_mm: torch.Tensor, intrinsics: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict joints, keypoints, root depth and vertices from a batch of crops (shapes: module docstring)."""
        ref = reference_depth_mm(depth_mm)  # (B,)
        valid = (depth_mm > 0).to(rgb.dtype)
        rel_depth = (depth_mm - ref[:, None, None, None]) / DEPTH_SCALE_MM * valid
        x = torch.cat(((rgb - RGB_MEAN) / RGB_STD, rel_depth.clamp(-5, 5), valid), dim=1)
        x = self.stem(x)
        s2 = self.stages[0](x)
        s4 = self.stages[1](s2)
        s8 = self.stages[2](s4)
        top = self.top(s8)
        deepest = s8
        if self.top16 is not None:
            deepest = self.stages[3](s8)
            up16 = self.top16(deepest)
            top = top + nn.functional.interpolate(up16, size=s8.shape[-2:], mode="bilinear", align_corners=False)
        up = nn.functional.interpolate(top, size=s4.shape[-2:], mode="bilinear", align_corners=False)
        f = self.lateral(s4) + up
        if self.context is not None:
            f = f + self.context(deepest.mean(dim=(2, 3)))[:, :, None, None]
        f = self.head(f)
        fine = f
        if self.stride == 2:
            up2 = nn.functional.interpolate(f, size=s2.shape[-2:], mode="bilinear", align_corners=False)
            fine = self.head2(self.lateral2(s2) + up2)
        heatmap_logits = self.heatmaps(fine)
        keypoints, weights = soft_argmax_2d(heatmap_logits, self.stride)
        read_z = (weights * self.depths(fine).float()).sum(dim=(2, 3)) * DEPTH_SCALE_MM  # (B, 21), mm from ref
        rel_z = read_z - read_z[:, ROOT : ROOT + 1]
        pooled = torch.cat((deepest.mean(dim=(2, 3)), f.mean(dim=(2, 3))), dim=1)
        # The wrist's depth: its own map's readout (free in rel_z, which subtracts it) carries the local depth
        # under the wrist; the pooled offset adds what only the whole crop shows.
        root_z = ref + read_z[:, ROOT] + self.root_depth(pooled).squeeze(-1).float() * DEPTH_SCALE_MM
        joints_cam = back_project(keypoints, root_z[:, None] + rel_z, intrinsics.float())
        joints = joints_cam - joints_cam[:, ROOT : ROOT + 1]
        if self.refine is not None:
            confidence = weights.flatten(2).amax(dim=-1)  # (B, 21): a sharp heatmap is a trusted joint
            refine_in = torch.cat((pooled.float(), (joints / DEPTH_SCALE_MM).flatten(1), confidence), dim=1)
            delta = self.refine(refine_in.to(pooled.dtype)).view(-1, NUM_JOINTS, 3).float() * DEPTH_SCALE_MM
            joints = joints + delta - delta[:, ROOT : ROOT + 1]
        aux = self.aux(pooled).view(-1, NUM_JOINTS, 3).float() * DEPTH_SCALE_MM
        aux = aux - aux[:, ROOT : ROOT + 1]
        if self.vertices is None:
            vertices = skinned_vertices(joints)
        else:
            vertex_in = torch.cat((pooled, (joints / DEPTH_SCALE_MM).flatten(1).to(pooled.dtype)), dim=1)
            vertices = self.vertices(vertex_in).view(-1, NUM_VERTICES, 3).float() * DEPTH_SCALE_MM
        return {
            "joints_mm": joints,
            "keypoints_2d_px": keypoints,
            "root_depth_mm": root_z,
            "root_cam_mm": joints_cam[:, ROOT],
            "vertices_mm": vertices,
            "aux_joints_mm": aux,
            "heatmap_logits": heatmap_logits.float(),
        }
