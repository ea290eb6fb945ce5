"""A PointPillars detector in plain PyTorch (no compiled ops): runs on CPU and GPU alike.

Module names, layers and BatchNorm settings (eps 1e-3, momentum 0.01) are OpenPCDet's ``PointPillar`` for its KITTI
config, so the state-dict keys are its ``model_state`` keys (``openpcdet_format`` reads and writes its checkpoints):

* **Pillar feature net** (``vfe``, OpenPCDet's ``PillarVFE``): each point gets ``(x, y, z, i)``, its offset to the
  mean of its pillar and to the pillar's centre in x, y, z (10 features); a shared Linear + BatchNorm + ReLU
  (``pfn_layers.0``) lifts them to ``C`` channels and a max pools each pillar. Pillars are found by ``torch.unique``
  over flat cell keys; by default there is no cap on points per pillar and no padding (a scatter-max), and
  ``max_points_per_pillar`` switches to OpenPCDet's padded voxel tensor exactly.
* **Scatter** (``PointPillarScatter``, no parameters): pillar features are written into a dense ``(B, C, ny, nx)``
  pseudo-image.
* **Backbone + neck** (``backbone_2d``, ``BaseBEVBackbone``): strided conv blocks, each upsampled back to the first
  block's resolution by a transposed conv (``deblocks``) and concatenated.
* **Head** (``dense_head``, ``AnchorHeadSingle``): per cell and anchor, class logits (sigmoid, focal loss), 7 box
  residuals (smooth-L1 with the sin-difference heading trick) and a 2-bin direction classifier (cross-entropy).

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
    """``VFE.NUM_FILTERS: [C]`` (one PFN layer) and ``MAP_TO_BEV.NUM_BEV_FEATURES``."""
    layer_nums: list[int] = field(default_factory=lambda: [1, 2, 2])
    layer_strides: list[int] = field(default_factory=lambda: [2, 2, 2])
    num_filters: list[int] = field(default_factory=lambda: [32, 64, 128])
    upsample_filters: int = 64
    """``NUM_UPSAMPLE_FILTERS`` of every level (``UPSAMPLE_STRIDES`` follow from ``layer_strides``: every level is
    brought back to the first block's resolution)."""
    max_points_per_pillar: int | None = None
    """``MAX_POINTS_PER_VOXEL``: null = every point of a pillar, no padding (faster); a number = OpenPCDet's padded
    voxel tensor exactly (first N points, zero slots pooled too) — use 32 to run or fine-tune OpenPCDet weights."""
    bn_momentum: float = 0.01
    """Every BatchNorm's running-statistics momentum: OpenPCDet's 0.01 (its eps, 1e-3, is fixed). Runs of a few hundred
    steps want 0.1, or their running statistics (what evaluation uses) are still far from the data's."""
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


# OpenPCDet's BatchNorm settings in every PointPillars layer (its checkpoints were trained with them); the momentum
# is then set from ``PillarsConfig.bn_momentum``.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


class PFNLayer(nn.Module):
    """OpenPCDet's last ``PFNLayer``: a shared Linear (no bias) + BatchNorm1d + ReLU over the points of the pillars."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(c_in, c_out, bias=False)
        self.norm = nn.BatchNorm1d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Point features ``(N, c_in)``, or padded pillars ``(P, M, c_in)`` -> the same shape with ``c_out``,
        before the max over the pillar."""
        x = self.linear(feats)
        # Padded pillars: BatchNorm1d over (P, C, M) as PillarVFE does, so the arithmetic is the same bit for bit.
        x = self.norm(x) if x.dim() == 2 else self.norm(x.permute(0, 2, 1)).permute(0, 2, 1)
        return F.relu(x)


class PillarVFE(nn.Module):
    """Holds OpenPCDet's ``PillarVFE`` parameters (one PFN layer, ``NUM_FILTERS: [C]``); the point grouping is in
    :meth:`PointPillars.pillar_features`."""

    def __init__(self, c_out: int) -> None:
        super().__init__()
        self.pfn_layers = nn.ModuleList([PFNLayer(10, c_out)])


def _conv_bn_relu(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM), nn.ReLU()]


class BaseBEVBackbone(nn.Module):
    """OpenPCDet's ``BaseBEVBackbone``: strided blocks (``ZeroPad2d`` + conv, then ``layer_nums`` 3×3 convs), each
    brought back to the first block's resolution by a ``ConvTranspose2d`` deblock (kernel = stride, 1 included) and
    concatenated."""

    def __init__(self, cfg: PillarsConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        self.deblocks = nn.ModuleList()
        c_in, total_stride = cfg.pfn_channels, 1
        for n, s, c in zip(cfg.layer_nums, cfg.layer_strides, cfg.num_filters, strict=True):
            layers: list[nn.Module] = [nn.ZeroPad2d(1), *_conv_bn_relu(nn.Conv2d(c_in, c, 3, s, 0, bias=False), c)]
            for _ in range(n):
                layers += _conv_bn_relu(nn.Conv2d(c, c, 3, 1, 1, bias=False), c)
            self.blocks.append(nn.Sequential(*layers))
            total_stride *= s
            up = total_stride // cfg.layer_strides[0]  # OpenPCDet's UPSAMPLE_STRIDES: back to the head's grid
            deconv = nn.ConvTranspose2d(c, cfg.upsample_filters, up, stride=up, bias=False)
            self.deblocks.append(nn.Sequential(*_conv_bn_relu(deconv, cfg.upsample_filters)))
            c_in = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pseudo-image ``(B, C, ny, nx)`` -> ``(B, L * upsample_filters, ny / s0, nx / s0)``."""
        ups = []
        for block, deblock in zip(self.blocks, self.deblocks, strict=True):
            x = block(x)
            ups.append(deblock(x))
        return torch.cat(ups, 1)


class AnchorHeadSingle(nn.Module):
    """OpenPCDet's ``AnchorHeadSingle`` convolutions: class, box-residual and direction-bin logits per anchor."""

    def __init__(self, c_in: int, anchors_per_loc: int, num_classes: int) -> None:
        super().__init__()
        self.conv_cls = nn.Conv2d(c_in, anchors_per_loc * num_classes, 1)
        self.conv_box = nn.Conv2d(c_in, anchors_per_loc * 7, 1)
        self.conv_dir_cls = nn.Conv2d(c_in, anchors_per_loc * 2, 1)
        # Focal-loss prior (OpenPCDet's init): every anchor starts at probability 0.01.
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.normal_(self.conv_box.weight, std=0.001)


class PointPillars(nn.Module):
    """Points ``(P, 5)`` (frame index, x, y, z, intensity) -> per-anchor class, box and direction predictions.

    Module names and layers are OpenPCDet's ``PointPillar`` (``vfe``, ``backbone_2d``, ``dense_head``), so its
    ``model_state`` keys are this model's state-dict keys (plus OpenPCDet's ``global_step`` buffer).
    """

    def __init__(self, cfg: PillarsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.nx, self.ny = grid_size(cfg)
        if cfg.max_points_per_pillar is not None and cfg.max_points_per_pillar < 1:
            raise ValueError(
                f"task.model.max_points_per_pillar must be at least 1 (OpenPCDet's KITTI configs use 32) or null "
                f"(every point, no padding); got {cfg.max_points_per_pillar}."
            )
        self.vfe = PillarVFE(cfg.pfn_channels)
        self.backbone_2d = BaseBEVBackbone(cfg)
        for module in self.modules():  # the momentum is no tensor: checkpoints of either setting load alike
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                module.momentum = cfg.bn_momentum
        self.head_stride = cfg.layer_strides[0]
        self.num_classes = len(cfg.anchors.classes)
        self.anchors_per_loc = self.num_classes * len(cfg.anchors.rotations)
        c_head = cfg.upsample_filters * len(cfg.layer_nums)
        self.dense_head = AnchorHeadSingle(c_head, self.anchors_per_loc, self.num_classes)
        head_grid = (self.nx // self.head_stride, self.ny // self.head_stride)
        anchors = make_anchors(cfg.anchors, cfg.point_range_m, head_grid)
        self.register_buffer("anchors", anchors.reshape(-1, 7), persistent=False)
        cls_of = torch.arange(self.num_classes).repeat_interleave(len(cfg.anchors.rotations)) + 1
        self.register_buffer("anchor_class", cls_of.repeat(head_grid[0] * head_grid[1]), persistent=False)

    def pillar_features(self, points: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Scatter points into pillars and pillars into the BEV pseudo-image ``(B, C, ny, nx)``."""
        cfg = self.cfg
        ix = ((points[:, 1] - cfg.point_range_m[0]) / cfg.pillar_size_m).floor().long().clamp(0, self.nx - 1)
        iy = ((points[:, 2] - cfg.point_range_m[1]) / cfg.pillar_size_m).floor().long().clamp(0, self.ny - 1)
        key = points[:, 0].long() * (self.nx * self.ny) + iy * self.nx + ix
        cells, inverse = torch.unique(key, return_inverse=True)
        if cfg.max_points_per_pillar is None:
            pooled = self._pool_points(points, ix, iy, inverse, cells.numel())
        else:
            pooled = self._pool_padded(points, ix, iy, inverse, cells.numel(), cfg.max_points_per_pillar)
        canvas = pooled.new_zeros(batch_size * self.ny * self.nx, pooled.shape[1])
        canvas = canvas.index_copy(0, cells, pooled)
        # Contiguous (B, C, ny, nx) as PointPillarScatter's: the convolutions then sum in the same order as OpenPCDet.
        return canvas.view(batch_size, self.ny, self.nx, -1).permute(0, 3, 1, 2).contiguous()

    def _pillar_centres(self, ix: torch.Tensor, iy: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Centres ``(..., 3)`` of the pillars at ``(ix, iy)``, in PillarVFE's arithmetic (bitwise the same)."""
        cfg = self.cfg
        size, lo = cfg.pillar_size_m, cfg.point_range_m
        centre_x = ix.to(dtype) * size + (size / 2 + lo[0])
        centre_y = iy.to(dtype) * size + (size / 2 + lo[1])
        centre_z = torch.full_like(centre_x, (lo[5] - lo[2]) / 2 + lo[2])
        return torch.stack([centre_x, centre_y, centre_z], -1)

    def _pool_points(
        self, points: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, inverse: torch.Tensor, num_pillars: int
    ) -> torch.Tensor:
        """Every point of a pillar, no padding: a scatter-max of the lifted point features ``(num_pillars, C)``."""
        xyz = points[:, 1:4]
        count = xyz.new_zeros(num_pillars).index_add_(0, inverse, torch.ones_like(xyz[:, 0]))
        mean = xyz.new_zeros(num_pillars, 3).index_add_(0, inverse, xyz) / count[:, None]
        centre = self._pillar_centres(ix, iy, xyz.dtype)
        feats = torch.cat([points[:, 1:5], xyz - mean[inverse], xyz - centre], 1)
        lifted = self.vfe.pfn_layers[0](feats)
        pooled = lifted.new_zeros(num_pillars, lifted.shape[1])
        return pooled.scatter_reduce(0, inverse[:, None].expand_as(lifted), lifted, "amax", include_self=False)

    def _pool_padded(
        self,
        points: torch.Tensor,
        ix: torch.Tensor,
        iy: torch.Tensor,
        inverse: torch.Tensor,
        num_pillars: int,
        max_points: int,
    ) -> torch.Tensor:
        """OpenPCDet's voxel tensor: the first ``max_points`` points of a pillar (input order), zero-padded slots
        that pass through the PFN layer (BatchNorm statistics and the max include them) -> ``(num_pillars, C)``."""
        order = torch.argsort(inverse, stable=True)
        count_all = torch.bincount(inverse, minlength=num_pillars)
        first = torch.cumsum(count_all, 0) - count_all
        slot = torch.empty_like(inverse)
        slot[order] = torch.arange(inverse.numel(), device=inverse.device) - first[inverse[order]]
        # Points past the cap all go to one extra slot that is dropped (no boolean mask: no host-device sync).
        dense = points.new_zeros(num_pillars, max_points + 1, 4)  # (x, y, z, intensity) per slot
        dense[inverse, slot.clamp(max=max_points)] = points[:, 1:5]
        dense = dense[:, :max_points]
        count = count_all.clamp(max=max_points)
        mean = dense[:, :, :3].sum(1, keepdim=True) / count.to(dense.dtype).view(-1, 1, 1)
        cell_ix = ix.new_zeros(num_pillars).index_copy_(0, inverse, ix)  # every point of a pillar has its cell
        cell_iy = iy.new_zeros(num_pillars).index_copy_(0, inverse, iy)
        centre = self._pillar_centres(cell_ix, cell_iy, dense.dtype)[:, None]
        feats = torch.cat([dense, dense[:, :, :3] - mean, dense[:, :, :3] - centre], -1)
        real = torch.arange(max_points, device=points.device)[None] < count[:, None]
        feats = feats * real[..., None].to(feats.dtype)  # padded slots are all-zero inputs, as in PillarVFE
        return self.vfe.pfn_layers[0](feats).amax(1)

    def predict_maps(self, points: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-anchor ``(cls (B, A, K), box (B, A, 7), dir (B, A, 2))`` logits / residuals."""
        feat = self.backbone_2d(self.pillar_features(points, batch_size))
        b = feat.shape[0]

        def flat(t: torch.Tensor, width: int) -> torch.Tensor:
            return t.permute(0, 2, 3, 1).reshape(b, -1, width)

        head = self.dense_head
        return (
            flat(head.conv_cls(feat), self.num_classes),
            flat(head.conv_box(feat), 7),
            flat(head.conv_dir_cls(feat), 2),
        )

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
