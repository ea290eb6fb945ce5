"""A PointPillars detector in plain PyTorch (no compiled ops): runs on CPU and GPU alike.

* **Pillar feature net** (OpenPCDet's ``PillarVFE``): each point gets ``(x, y, z, i)``, its offset to the mean of
  its pillar and to the pillar's centre in x, y, z (10 features); a shared Linear + BatchNorm + ReLU lifts them to
  ``C`` channels and a scatter-max (``Tensor.scatter_reduce``) pools each pillar. Pillars are found by
  ``torch.unique`` over flat cell keys, so there is no cap on points per pillar and no padding.
* **Scatter** (``PointPillarScatter``): pillar features are written into a dense ``(B, C, ny, nx)`` pseudo-image.
* **Backbone + neck** (``BaseBEVBackbone``): three strided conv blocks, each upsampled back to the first block's
  resolution by a transposed conv and concatenated (FPN-like).
* **Head** (``AnchorHeadSingle``): per cell and anchor, class logits (sigmoid, focal loss), 7 box residuals
  (smooth-L1 with the sin-difference heading trick) and a 2-bin direction classifier (cross-entropy).

Anchor-based rather than centre-based because it is what PointPillars and OpenPCDet's KITTI configs use, so the
losses, thresholds and defaults carry over one to one; the sin-difference heading loss cannot tell θ from θ + π,
which is what the direction classifier resolves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainwell.tasks.detection3d.anchors import (
    AnchorConfig,
    assign_targets,
    decode,
    direction_targets,
    encode,
    make_anchors,
)
from trainwell.tasks.detection3d.boxes import limit_period, nms_rotated


@dataclass
class PillarsConfig:
    """``task.model``: the detector's geometry, widths, loss weights and post-processing (OpenPCDet's names)."""

    point_range_m: list[float] = field(default_factory=lambda: [0.0, -20.0, -3.0, 40.0, 20.0, 1.0])
    """``POINT_CLOUD_RANGE``: x_min, y_min, z_min, x_max, y_max, z_max."""
    pillar_size_m: float = 0.25
    """``VOXEL_SIZE`` in x and y (a pillar spans the whole z range)."""
    pfn_channels: int = 32
    layer_nums: list[int] = field(default_factory=lambda: [1, 2, 2])
    layer_strides: list[int] = field(default_factory=lambda: [2, 2, 2])
    num_filters: list[int] = field(default_factory=lambda: [32, 64, 128])
    upsample_filters: int = 64
    """``NUM_UPSAMPLE_FILTERS`` of every level."""
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    cls_weight: float = 1.0
    loc_weight: float = 2.0
    dir_weight: float = 0.2
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smooth_l1_beta: float = 1.0 / 9.0
    dir_offset: float = 0.78539
    score_thresh: float = 0.1
    nms_thresh: float = 0.01
    nms_pre_max: int = 1000
    nms_post_max: int = 100


def grid_size(cfg: PillarsConfig) -> tuple[int, int]:
    """BEV pillar grid ``(nx, ny)``; raises if the range is not a whole number of pillars."""
    sizes = []
    for lo, hi in ((0, 3), (1, 4)):
        n = (cfg.point_range_m[hi] - cfg.point_range_m[lo]) / cfg.pillar_size_m
        if abs(n - round(n)) > 1e-6:
            raise ValueError(
                f"task.model.point_range_m {cfg.point_range_m} is not a whole number of "
                f"pillar_size_m={cfg.pillar_size_m} pillars."
            )
        sizes.append(round(n))
    return sizes[0], sizes[1]


def _block(c_in: int, c_out: int, stride: int, num_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    for _ in range(num_layers):
        layers += [nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


class PointPillars(nn.Module):
    """Points ``(P, 5)`` (frame index, x, y, z, intensity) -> per-anchor class, box and direction predictions."""

    def __init__(self, cfg: PillarsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.nx, self.ny = grid_size(cfg)
        self.pfn = nn.Sequential(
            nn.Linear(10, cfg.pfn_channels, bias=False), nn.BatchNorm1d(cfg.pfn_channels), nn.ReLU()
        )
        self.blocks = nn.ModuleList()
        self.ups = nn.ModuleList()
        c_in, total_stride = cfg.pfn_channels, 1
        for n, s, c in zip(cfg.layer_nums, cfg.layer_strides, cfg.num_filters, strict=True):
            self.blocks.append(_block(c_in, c, s, n))
            total_stride *= s
            up = total_stride // cfg.layer_strides[0]  # back to the first block's resolution (the head's grid)
            self.ups.append(
                nn.Sequential(
                    nn.ConvTranspose2d(c, cfg.upsample_filters, up, up, bias=False)
                    if up > 1
                    else nn.Conv2d(c, cfg.upsample_filters, 1, bias=False),
                    nn.BatchNorm2d(cfg.upsample_filters),
                    nn.ReLU(),
                )
            )
            c_in = c
        self.head_stride = cfg.layer_strides[0]
        self.num_classes = len(cfg.anchors.classes)
        self.anchors_per_loc = self.num_classes * len(cfg.anchors.rotations)
        c_head = cfg.upsample_filters * len(cfg.layer_nums)
        self.conv_cls = nn.Conv2d(c_head, self.anchors_per_loc * self.num_classes, 1)
        self.conv_box = nn.Conv2d(c_head, self.anchors_per_loc * 7, 1)
        self.conv_dir = nn.Conv2d(c_head, self.anchors_per_loc * 2, 1)
        # Focal-loss prior (OpenPCDet's init): every anchor starts at probability 0.01.
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.normal_(self.conv_box.weight, std=0.001)
        head_grid = (self.nx // self.head_stride, self.ny // self.head_stride)
        anchors = make_anchors(cfg.anchors, cfg.point_range_m, head_grid)
        self.register_buffer("anchors", anchors.reshape(-1, 7), persistent=False)
        cls_of = torch.arange(self.num_classes).repeat_interleave(len(cfg.anchors.rotations)) + 1
        self.register_buffer("anchor_class", cls_of.repeat(head_grid[0] * head_grid[1]), persistent=False)

    def pillar_features(self, points: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Scatter points into pillars and pillars into the BEV pseudo-image ``(B, C, ny, nx)``."""
        cfg = self.cfg
        xyz = points[:, 1:4]
        ix = ((xyz[:, 0] - cfg.point_range_m[0]) / cfg.pillar_size_m).floor().long().clamp(0, self.nx - 1)
        iy = ((xyz[:, 1] - cfg.point_range_m[1]) / cfg.pillar_size_m).floor().long().clamp(0, self.ny - 1)
        key = points[:, 0].long() * (self.nx * self.ny) + iy * self.nx + ix
        cells, inverse = torch.unique(key, return_inverse=True)
        count = torch.zeros(cells.numel(), device=points.device).index_add_(0, inverse, torch.ones_like(xyz[:, 0]))
        mean = torch.zeros(cells.numel(), 3, device=points.device).index_add_(0, inverse, xyz) / count[:, None]
        centre_x = (ix.float() + 0.5) * cfg.pillar_size_m + cfg.point_range_m[0]
        centre_y = (iy.float() + 0.5) * cfg.pillar_size_m + cfg.point_range_m[1]
        centre_z = (cfg.point_range_m[2] + cfg.point_range_m[5]) / 2
        feats = torch.cat(
            [
                points[:, 1:5],
                xyz - mean[inverse],
                (xyz[:, 0] - centre_x)[:, None],
                (xyz[:, 1] - centre_y)[:, None],
                (xyz[:, 2] - centre_z)[:, None],
            ],
            1,
        )
        lifted = self.pfn(feats)
        pooled = torch.zeros(cells.numel(), lifted.shape[1], device=points.device, dtype=lifted.dtype)
        pooled = pooled.scatter_reduce(0, inverse[:, None].expand_as(lifted), lifted, "amax", include_self=False)
        canvas = lifted.new_zeros(batch_size * self.ny * self.nx, lifted.shape[1])
        canvas = canvas.index_copy(0, cells, pooled)
        return canvas.view(batch_size, self.ny, self.nx, -1).permute(0, 3, 1, 2)

    def predict_maps(self, points: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-anchor ``(cls (B, A, K), box (B, A, 7), dir (B, A, 2))`` logits / residuals."""
        x = self.pillar_features(points, batch_size)
        ups = []
        for block, up in zip(self.blocks, self.ups, strict=True):
            x = block(x)
            ups.append(up(x))
        feat = torch.cat(ups, 1)
        b = feat.shape[0]

        def flat(t: torch.Tensor, width: int) -> torch.Tensor:
            return t.permute(0, 2, 3, 1).reshape(b, -1, width)

        return flat(self.conv_cls(feat), self.num_classes), flat(self.conv_box(feat), 7), flat(self.conv_dir(feat), 2)

    def forward(self, batch: dict[str, Any]) -> Any:
        """Training: OpenPCDet's ``(loss, tb_dict, disp_dict)``; eval: a list of per-frame detections."""
        cls, box, dir_logits = self.predict_maps(batch["points"], int(batch["batch_size"]))
        if self.training:
            return self.loss(cls, box, dir_logits, batch)
        return self.post_process(cls, box, dir_logits)

    def loss(
        self, cls: torch.Tensor, box: torch.Tensor, dir_logits: torch.Tensor, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Focal classification, smooth-L1 box and direction losses (each normalised by the positives)."""
        cfg = self.cfg
        labels, matched = [], []
        # Target assignment is vectorised within a frame; frames have different numbers of boxes.
        for b in range(cls.shape[0]):
            lab, box_gt = assign_targets(
                self.anchors,
                self.anchor_class,
                batch["gt_boxes"][b],
                batch["gt_labels"][b],
                batch["gt_ignored"][b],
                cfg.anchors,
            )
            labels.append(lab)
            matched.append(box_gt)
        labels_t, matched_t = torch.stack(labels), torch.stack(matched)
        pos = labels_t > 0
        num_pos = pos.sum(1, keepdim=True).float().clamp_min(1.0)
        cared = (labels_t >= 0).float() / num_pos
        one_hot = F.one_hot(labels_t.clamp_min(0), self.num_classes + 1)[..., 1:].float()
        cls_f = cls.float()
        prob = torch.sigmoid(cls_f)
        pt = one_hot * (1 - prob) + (1 - one_hot) * prob
        alpha = one_hot * cfg.focal_alpha + (1 - one_hot) * (1 - cfg.focal_alpha)
        bce = F.binary_cross_entropy_with_logits(cls_f, one_hot, reduction="none")
        loss_cls = (alpha * pt.pow(cfg.focal_gamma) * bce * cared[..., None]).sum() / cls.shape[0]

        anchors = self.anchors[None].expand_as(matched_t)
        targets = encode(matched_t, anchors)
        pred = box.float()
        # Sin-difference: compare sin(a - b) through sin(a)cos(b) and cos(a)sin(b), as OpenPCDet's add_sin_difference.
        pred_rot = torch.sin(pred[..., 6:7]) * torch.cos(targets[..., 6:7])
        tgt_rot = torch.cos(pred[..., 6:7]) * torch.sin(targets[..., 6:7])
        diff = torch.cat([pred[..., :6] - targets[..., :6], pred_rot - tgt_rot], -1).abs()
        beta = cfg.smooth_l1_beta
        smooth = torch.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta)
        reg_w = pos.float() / num_pos
        loss_loc = (smooth.sum(-1) * reg_w).sum() / cls.shape[0]

        dir_t = direction_targets(matched_t[..., 6], cfg.dir_offset)
        dir_ce = F.cross_entropy(dir_logits.float().reshape(-1, 2), dir_t.reshape(-1), reduction="none")
        loss_dir = (dir_ce.view_as(reg_w) * reg_w).sum() / cls.shape[0]

        tb = {
            "rpn_loss_cls": loss_cls * cfg.cls_weight,
            "rpn_loss_loc": loss_loc * cfg.loc_weight,
            "rpn_loss_dir": loss_dir * cfg.dir_weight,
        }
        loss = tb["rpn_loss_cls"] + tb["rpn_loss_loc"] + tb["rpn_loss_dir"]
        disp = {"num_pos_anchors": pos.sum().float() / cls.shape[0]}
        return loss, tb, disp

    @torch.no_grad()
    def post_process(self, cls: torch.Tensor, box: torch.Tensor, dir_logits: torch.Tensor) -> list[dict[str, Any]]:
        """Per frame: ``{"boxes": (K, 7), "scores": (K,), "labels": (K,) 1..C}`` after score threshold and NMS."""
        cfg = self.cfg
        out = []
        period = math.pi  # 2 direction bins
        for b in range(cls.shape[0]):
            scores, labels = torch.sigmoid(cls[b].float()).max(-1)
            keep = scores >= cfg.score_thresh
            boxes = decode(box[b][keep].float(), self.anchors[keep])
            dir_label = dir_logits[b][keep].argmax(-1)
            rot = limit_period(boxes[:, 6] - cfg.dir_offset, 0.0, period)
            boxes[:, 6] = limit_period(rot + cfg.dir_offset + period * dir_label.float(), 0.5, 2 * math.pi)
            sel = nms_rotated(boxes, scores[keep], cfg.nms_thresh, cfg.nms_pre_max, cfg.nms_post_max)
            out.append({"boxes": boxes[sel], "scores": scores[keep][sel], "labels": labels[keep][sel] + 1})
        return out
