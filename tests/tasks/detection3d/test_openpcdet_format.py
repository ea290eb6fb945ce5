"""OpenPCDet both ways: `export --format openpcdet` into, and `--init-from` out of, an independent reference.

The reference below re-expresses OpenPCDet's published ``PointPillar`` (``PillarVFE``/``PFNLayer``,
``PointPillarScatter``, ``BaseBEVBackbone``, ``AnchorHeadSingle``, the detector's ``global_step`` buffer) and its
voxelisation (first ``MAX_POINTS_PER_VOXEL`` points of a pillar, zero-padded slots) from their structure, written
here without trainwell's key map or model code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from trainwell.cli import main
from trainwell.engine.checkpoint import load_checkpoint
from trainwell.engine.checkpoint.files import atomic_save
from trainwell.engine.checkpoint.weights import load_model_weights
from trainwell.experiment import build_task, load_config
from trainwell.tasks.detection3d.anchors import AnchorClassConfig, AnchorConfig
from trainwell.tasks.detection3d.datasets import collate_frames
from trainwell.tasks.detection3d.model import PillarsConfig, PointPillars
from trainwell.tasks.detection3d.openpcdet_format import read_openpcdet
from trainwell.tasks.detection3d.scenes import SceneConfig
from trainwell.tasks.detection3d.task import Detection3DDataConfig, Detection3DTask, Detection3DTaskConfig

ROOT = Path(__file__).resolve().parents[3]
TINY = str(ROOT / "configs" / "detection3d" / "tiny.yaml")
# The tiny config's model (configs/detection3d/tiny.yaml), with OpenPCDet's padded pillars (4 points, so some overflow).
MAX_POINTS = 4
TINY_MODEL = {
    "range": [0.0, -16.0, -3.0, 32.0, 16.0, 1.0],
    "voxel": 0.5,
    "vfe": 16,
    "layer_nums": [1, 1, 1],
    "strides": [1, 2, 2],
    "filters": [16, 32, 32],
    "up_strides": [1, 2, 4],
    "up_filters": [16, 16, 16],
}
KITTI_MODEL = {  # tools/cfgs/kitti_models/pointpillar.yaml
    "range": [0.0, -39.68, -3.0, 69.12, 39.68, 1.0],
    "voxel": 0.16,
    "vfe": 64,
    "layer_nums": [3, 5, 5],
    "strides": [2, 2, 2],
    "filters": [64, 128, 256],
    "up_strides": [1, 2, 4],
    "up_filters": [128, 128, 128],
}
OVERRIDES = [f"task.model.max_points_per_pillar={MAX_POINTS}", "data.train_size=8", "data.val_size=2"]


# ---- the reference: OpenPCDet's PointPillar re-expressed ----------------------------------------------------------
class RefPFNLayer(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(c_in, c_out, bias=False)
        self.norm = nn.BatchNorm1d(c_out, eps=1e-3, momentum=0.01)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:  # (P, M, C) -> (P, 1, C_out), last layer
        x = self.linear(inputs)
        x = torch.relu(self.norm(x.permute(0, 2, 1)).permute(0, 2, 1))
        return x.max(dim=1, keepdim=True)[0]


class RefPillarVFE(nn.Module):
    def __init__(self, c_out: int, voxel: list[float], pc_range: list[float]) -> None:
        super().__init__()
        self.pfn_layers = nn.ModuleList([RefPFNLayer(10, c_out)])
        self.voxel, self.offset = voxel, [voxel[i] / 2 + pc_range[i] for i in range(3)]

    def forward(self, voxels: torch.Tensor, num_points: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        mean = voxels[:, :, :3].sum(1, keepdim=True) / num_points.view(-1, 1, 1).float()
        f_cluster = voxels[:, :, :3] - mean
        f_center = torch.zeros_like(voxels[:, :, :3])
        for axis, col in ((0, 3), (1, 2), (2, 1)):  # coords are (batch, z, y, x)
            centre = coords[:, col].float().unsqueeze(1) * self.voxel[axis] + self.offset[axis]
            f_center[:, :, axis] = voxels[:, :, axis] - centre
        features = torch.cat([voxels, f_cluster, f_center], -1)
        mask = (torch.arange(voxels.shape[1])[None] < num_points[:, None]).float().unsqueeze(-1)
        features = features * mask
        for pfn in self.pfn_layers:
            features = pfn(features)
        return features.squeeze(1)


def ref_scatter(pillars: torch.Tensor, coords: torch.Tensor, batch_size: int, nx: int, ny: int) -> torch.Tensor:
    out = []
    for b in range(batch_size):
        canvas = torch.zeros(pillars.shape[1], nx * ny)
        sel = coords[:, 0] == b
        c = coords[sel]
        canvas[:, (c[:, 1] + c[:, 2] * nx + c[:, 3]).long()] = pillars[sel].t()
        out.append(canvas)
    return torch.stack(out).view(batch_size, pillars.shape[1], ny, nx)


class RefBackbone(nn.Module):
    def __init__(self, m: dict[str, Any]) -> None:
        super().__init__()
        self.blocks, self.deblocks = nn.ModuleList(), nn.ModuleList()
        c_in = [m["vfe"], *m["filters"][:-1]]
        for i, (n, s, c) in enumerate(zip(m["layer_nums"], m["strides"], m["filters"], strict=True)):
            layers = [
                nn.ZeroPad2d(1),
                nn.Conv2d(c_in[i], c, 3, stride=s, padding=0, bias=False),
                nn.BatchNorm2d(c, eps=1e-3, momentum=0.01),
                nn.ReLU(),
            ]
            for _ in range(n):
                layers += [nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)]
                layers += [nn.ReLU()]
            self.blocks.append(nn.Sequential(*layers))
            u, cu = m["up_strides"][i], m["up_filters"][i]
            self.deblocks.append(
                nn.Sequential(
                    nn.ConvTranspose2d(c, cu, u, stride=u, bias=False),
                    nn.BatchNorm2d(cu, eps=1e-3, momentum=0.01),
                    nn.ReLU(),
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ups = []
        for block, deblock in zip(self.blocks, self.deblocks, strict=True):
            x = block(x)
            ups.append(deblock(x))
        return torch.cat(ups, 1)


class RefHead(nn.Module):
    def __init__(self, c_in: int, num_anchors: int, num_class: int) -> None:
        super().__init__()
        self.conv_cls = nn.Conv2d(c_in, num_anchors * num_class, 1)
        self.conv_box = nn.Conv2d(c_in, num_anchors * 7, 1)
        self.conv_dir_cls = nn.Conv2d(c_in, num_anchors * 2, 1)


class RefPointPillar(nn.Module):
    def __init__(self, m: dict[str, Any]) -> None:
        super().__init__()
        self.register_buffer("global_step", torch.LongTensor(1).zero_())
        self.m = m
        self.nx = round((m["range"][3] - m["range"][0]) / m["voxel"])
        self.ny = round((m["range"][4] - m["range"][1]) / m["voxel"])
        voxel = [m["voxel"], m["voxel"], m["range"][5] - m["range"][2]]
        self.vfe = RefPillarVFE(m["vfe"], voxel, m["range"])
        self.backbone_2d = RefBackbone(m)
        self.dense_head = RefHead(sum(m["up_filters"]), 3 * 2, 3)  # 3 classes x 2 rotations per location

    def forward(self, points: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        voxels, num_points, coords = ref_voxelize(points, self.m, self.nx, self.ny)
        bev = ref_scatter(self.vfe(voxels, num_points, coords), coords, batch_size, self.nx, self.ny)
        feat = self.backbone_2d(bev)
        h = self.dense_head
        cls, box, dirs = (conv(feat).permute(0, 2, 3, 1) for conv in (h.conv_cls, h.conv_box, h.conv_dir_cls))
        return cls.reshape(batch_size, -1, 3), box.reshape(batch_size, -1, 7), dirs.reshape(batch_size, -1, 2)


def ref_voxelize(
    points: torch.Tensor, m: dict[str, Any], nx: int, ny: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points (b, x, y, z, i) -> voxels (V, MAX_POINTS, 4), points per voxel, coords (b, z, y, x); first-come order."""
    slots: dict[tuple[int, int, int], list[torch.Tensor]] = {}
    for p in points:
        ix = min(max(int((p[1] - m["range"][0]) // m["voxel"]), 0), nx - 1)
        iy = min(max(int((p[2] - m["range"][1]) // m["voxel"]), 0), ny - 1)
        kept = slots.setdefault((int(p[0]), iy, ix), [])
        if len(kept) < MAX_POINTS:
            kept.append(p[1:5])
    # Pillars sorted by (frame, y, x): the order changes nothing but the float summation order of BatchNorm's batch
    # statistics in training mode (OpenPCDet's voxel generator lists them first-come).
    slots = dict(sorted(slots.items()))
    voxels = torch.zeros(len(slots), MAX_POINTS, 4)
    for v, kept in enumerate(slots.values()):
        voxels[v, : len(kept)] = torch.stack(kept)
    num_points = torch.tensor([len(k) for k in slots.values()])
    coords = torch.tensor([[b, 0, y, x] for b, y, x in slots])
    return voxels, num_points, coords


def ref_openpcdet_adam(model: nn.Module) -> torch.optim.Adam:
    """adam_onecycle's optimizer layout: flatten the leaf modules, split BatchNorm layers off (two groups)."""

    def leaves(mod: nn.Module) -> list[nn.Module]:
        kids = list(mod.children())
        return [leaf for k in kids for leaf in leaves(k)] if kids else [mod]

    bn = [leaf for leaf in leaves(model) if isinstance(leaf, nn.BatchNorm1d | nn.BatchNorm2d)]
    other = [leaf for leaf in leaves(model) if not isinstance(leaf, nn.BatchNorm1d | nn.BatchNorm2d)]
    groups = [[p for leaf in g for p in leaf.parameters()] for g in (other, bn)]
    return torch.optim.Adam([{"params": g, "lr": 0} for g in groups], betas=(0.9, 0.99))


# ---- helpers ----------------------------------------------------------------------------------------------------
def _batch(num_frames: int = 2) -> dict[str, Any]:
    data = Detection3DDataConfig(
        train_size=num_frames,
        val_size=1,
        scene=SceneConfig(num_channels=16, azimuth_step_deg=0.5, scene_x_m=(4.0, 30.0), scene_half_width_m=14.0),
    )
    task = Detection3DTask(Detection3DTaskConfig(model=_tiny_cfg()), data)
    train, _ = task.build_datasets()
    return collate_frames([train[i] for i in range(num_frames)])


def _tiny_cfg(**changes: Any) -> PillarsConfig:
    m = TINY_MODEL
    values = {
        "point_range_m": m["range"],
        "pillar_size_m": m["voxel"],
        "pfn_channels": m["vfe"],
        "layer_nums": m["layer_nums"],
        "layer_strides": m["strides"],
        "num_filters": m["filters"],
        "upsample_filters": m["up_filters"][0],
        "max_points_per_pillar": MAX_POINTS,
    }
    return PillarsConfig(**{**values, **changes})


def _randomise(model: nn.Module, seed: int) -> None:
    """Every tensor random (BN statistics included), so a tensor loaded into the wrong slot shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                noise = torch.rand(t.shape, generator=gen)
                t.copy_(noise * 0.4 + 0.8 if "running_var" in name else (noise - 0.5) * 0.6)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("pcdet") / "run"
    assert main(["train", TINY, f"run.dir={run}", "train.epochs=1", *OVERRIDES]) == 0
    return run


# ---- the tests --------------------------------------------------------------------------------------------------
def test_the_kitti_config_has_openpcdets_keys_and_shapes() -> None:
    ours = PointPillars(
        PillarsConfig(
            point_range_m=KITTI_MODEL["range"],
            pillar_size_m=0.16,
            pfn_channels=64,
            layer_nums=[3, 5, 5],
            layer_strides=[2, 2, 2],
            num_filters=[64, 128, 256],
            upsample_filters=128,
        )
    ).state_dict()
    ref = RefPointPillar(KITTI_MODEL).state_dict()
    assert {k: tuple(v.shape) for k, v in ref.items() if k != "global_step"} == {
        k: tuple(v.shape) for k, v in ours.items()
    }
    for name in ("vfe.pfn_layers.0.linear.weight", "backbone_2d.blocks.0.1.weight", "dense_head.conv_dir_cls.weight"):
        assert name in ours
    bn = [m for m in PointPillars(_tiny_cfg()).modules() if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d)]
    assert bn and all(m.eps == 1e-3 and m.momentum == 0.01 for m in bn)


def test_export_loads_strictly_into_the_reference_with_equal_outputs(trained_run: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "last.pt"
    out = tmp_path / "checkpoint_epoch_1.pth"
    assert main(["export", str(ckpt), "--format", "openpcdet", "--out", str(out)]) == 0
    container = torch.load(out, map_location="cpu", weights_only=True)
    payload = load_checkpoint(ckpt)
    assert set(container) == {"epoch", "it", "model_state", "optimizer_state", "version"}
    assert container["epoch"] == 1 and container["it"] == payload["train_state"]["global_step"] > 0
    assert int(container["model_state"]["global_step"]) == container["it"]

    ref = RefPointPillar(TINY_MODEL)
    ref.load_state_dict(container["model_state"], strict=True)  # every tensor of OpenPCDet's model, no other
    ours = PointPillars(_tiny_cfg())
    ours.load_state_dict(payload["model"], strict=True)
    batch = _batch()
    pts = batch["points"]
    cells = (pts[:, 0] * 1e6 + ((pts[:, 2] + 16) // 0.5) * 1e3 + (pts[:, 1] // 0.5)).long()
    counts = torch.unique(cells, return_counts=True)[1]
    assert counts.max() > MAX_POINTS and counts.min() < MAX_POINTS  # both the cap and the zero slots are exercised
    for mode in ("eval", "train"):  # train: BatchNorm over the padded slots too
        ref.train(mode == "train")
        ours.train(mode == "train")
        with torch.no_grad():
            expected = ref(batch["points"], 2)
            got = ours.predict_maps(batch["points"], 2)
        for e, g in zip(expected, got, strict=True):
            assert e.shape == g.shape
            torch.testing.assert_close(g, e, atol=1e-5, rtol=0)


def test_exported_optimizer_state_loads_into_adam_onecycles_layout(trained_run: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "last.pt"
    out = tmp_path / "checkpoint_epoch_1.pth"
    assert main(["export", str(ckpt), "--format", "openpcdet", "--out", str(out)]) == 0
    container = torch.load(out, map_location="cpu", weights_only=True)
    ref = RefPointPillar(TINY_MODEL)
    ref.load_state_dict(container["model_state"])
    optim = ref_openpcdet_adam(ref)
    optim.load_state_dict(container["optimizer_state"])
    # Each reference parameter holds the Adam moments trainwell held for the parameter of the same name.
    payload = load_checkpoint(ckpt)
    ours = dict(PointPillars(_tiny_cfg()).named_parameters())
    index_of = dict(zip(ours, payload["optimizer"]["param_groups"][0]["params"], strict=True))
    for name, param in ref.named_parameters():
        theirs = optim.state[param]
        mine = payload["optimizer"]["state"][index_of[name]]
        torch.testing.assert_close(theirs["exp_avg_sq"], mine["exp_avg_sq"], atol=0, rtol=0)
        torch.testing.assert_close(theirs["exp_avg"], mine["exp_avg"], atol=0, rtol=0)
        assert float(theirs["step"]) == float(mine["step"])


def _save_openpcdet(model: nn.Module, path: Path) -> None:
    """As OpenPCDet's save_checkpoint: the legacy (non-zip) serialisation, a version string, a plain optimizer."""
    container = {
        "epoch": 80,
        "it": 37120,
        "model_state": model.state_dict(),
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 3e-3, "betas": (0.95, 0.99), "params": [0]}]},
        "version": "pcdet+0.6.0",
    }
    torch.save(container, path, _use_new_zipfile_serialization=False)


def test_init_from_reads_openpcdets_container_through_the_cli(tmp_path: Path) -> None:
    ref = RefPointPillar(TINY_MODEL)
    _randomise(ref, seed=3)
    pth = tmp_path / "checkpoint_epoch_80.pth"
    _save_openpcdet(ref, pth)
    run = tmp_path / "run"
    # lr 1e-12: the one update moves a parameter by ~1e-12, against ~0.3 between an initialised model and this one.
    args = ["train", TINY, f"run.dir={run}", "--init-from", str(pth), "train.max_steps=1", "optim.lr=1e-12"]
    assert main([*args, *OVERRIDES]) == 0
    log = (run / "train.log").read_text()
    assert "an OpenPCDet checkpoint" in log and "loaded" in log
    state = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    for name, param in ref.named_parameters():
        torch.testing.assert_close(state[name], param.detach(), atol=1e-9, rtol=0)

    # eval with the container itself: the same outputs as the reference before NMS.
    ours = PointPillars(_tiny_cfg())
    report = load_model_weights(ours, pth, foreign=read_openpcdet)
    assert report.is_exact and report.container is not None
    ours.eval()
    ref.eval()
    batch = _batch()
    with torch.no_grad():
        for e, g in zip(ref(batch["points"], 2), ours.predict_maps(batch["points"], 2), strict=True):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=0)


def test_eval_scores_an_openpcdet_container_directly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `trainwell eval CONFIG --checkpoint checkpoint_epoch_80.pth` (examples/openpcdet_style/README.md): the container's
    # weights are what is scored — the same detections (result files) and metrics as the equal trainwell checkpoint.
    ref = RefPointPillar(TINY_MODEL)
    _randomise(ref, seed=5)
    pth = tmp_path / "checkpoint_epoch_80.pth"
    _save_openpcdet(ref, pth)
    ours = PointPillars(_tiny_cfg())
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if k != "global_step"})
    atomic_save({"model": ours.state_dict()}, tmp_path / "same.pt")
    scored, files = {}, {}
    for name, checkpoint in (("container", pth), ("trainwell", tmp_path / "same.pt")):
        out, export = tmp_path / f"{name}.json", tmp_path / name
        args = [f"--checkpoint={checkpoint}", f"--out={out}", f"--export={export}"]
        assert main(["eval", TINY, *OVERRIDES, *args]) == 0
        scored[name] = json.loads(out.read_text())["metrics"]
        files[name] = [p.read_text() for p in sorted((export / "final_result" / "data").glob("*.txt"))]
    assert scored["container"] == scored["trainwell"] and "Car AP_R40@0.70, 0.70, 0.70:" in capsys.readouterr().out
    assert files["container"] == files["trainwell"] and any(files["container"])  # detections, the same lines


def test_init_from_a_mismatched_openpcdet_model_names_the_container_and_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wider = RefPointPillar({**TINY_MODEL, "vfe": 32})
    pth = tmp_path / "checkpoint_epoch_80.pth"
    _save_openpcdet(wider, pth)
    args = ["train", TINY, f"run.dir={tmp_path / 'run'}", "--init-from", str(pth), "train.max_steps=1"]
    assert main([*args, *OVERRIDES]) != 0
    err = capsys.readouterr().err
    assert "an OpenPCDet checkpoint" in err and "version pcdet+0.6.0" in err
    assert "vfe.pfn_layers.0.linear.weight" in err and "Traceback" not in err


def ref_anchors(
    pc_range: list[float], grid_xy: tuple[int, int], classes: list[tuple[list[float], float]]
) -> torch.Tensor:
    """OpenPCDet's AnchorGenerator (align_center False), concatenated over classes as AnchorHeadSingle does."""
    per_class = []
    for size, bottom in classes:
        nx, ny = grid_xy
        xs = torch.arange(pc_range[0], pc_range[3] + 1e-5, step=(pc_range[3] - pc_range[0]) / (nx - 1))
        ys = torch.arange(pc_range[1], pc_range[4] + 1e-5, step=(pc_range[4] - pc_range[1]) / (ny - 1))
        x, y, z = torch.meshgrid([xs, ys, torch.tensor([bottom])], indexing="ij")
        a = torch.stack((x, y, z), -1)[:, :, :, None, None, :].repeat(1, 1, 1, 1, 2, 1)  # one size, two rotations
        dims = torch.tensor(size).view(1, 1, 1, 1, 1, 3).expand(*a.shape[:5], 3)
        rot = torch.tensor([0.0, 1.57]).view(1, 1, 1, 1, 2, 1).expand(*a.shape[:5], 1)
        a = torch.cat([a, dims, rot], -1).permute(2, 1, 0, 3, 4, 5).contiguous()  # (z, y, x, size, rot, 7)
        a[..., 2] += a[..., 5] / 2
        per_class.append(a)
    return torch.cat(per_class, dim=-3).reshape(-1, 7)


def test_anchors_with_align_center_false_are_openpcdets() -> None:
    classes = [([3.9, 1.6, 1.56], -1.78), ([0.8, 0.6, 1.73], -0.6), ([1.76, 0.6, 1.73], -0.6)]
    cfg = _tiny_cfg(
        anchors=AnchorConfig(
            classes=[
                AnchorClassConfig(name, tuple(size), bottom)
                for name, (size, bottom) in zip(("Car", "Pedestrian", "Cyclist"), classes, strict=True)
            ],
            rotations=(0.0, 1.57),
            align_center=False,
        )
    )
    model = PointPillars(cfg)
    expected = ref_anchors(TINY_MODEL["range"], (model.nx, model.ny), classes)
    torch.testing.assert_close(model.anchors, expected, atol=1e-5, rtol=0)


def test_the_example_kitti_config_builds_openpcdets_pointpillar() -> None:
    cfg = load_config(ROOT / "examples" / "openpcdet_style" / "pointpillar_kitti.yaml")
    model = build_task(cfg).build_model()
    ref = RefPointPillar(KITTI_MODEL).state_dict()
    assert {k: tuple(v.shape) for k, v in ref.items() if k != "global_step"} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }
    classes = [([3.9, 1.6, 1.56], -1.78), ([0.8, 0.6, 1.73], -0.6), ([1.76, 0.6, 1.73], -0.6)]
    head_grid = (model.nx // 2, model.ny // 2)  # feature_map_stride 2
    torch.testing.assert_close(model.anchors, ref_anchors(KITTI_MODEL["range"], head_grid, classes), atol=1e-4, rtol=0)
    assert cfg.optim.betas == [0.95, 0.99] and cfg.checkpoint.keep == 30


def test_export_refuses_a_checkpoint_of_another_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "last.pt"
    atomic_save({"model": {"w": torch.zeros(2)}, "config": {"task": {"class_path": "my_task:Regression"}}}, ckpt)
    out = tmp_path / "checkpoint_epoch_1.pth"
    assert main(["export", str(ckpt), "--format", "openpcdet", "--out", str(out)]) != 0
    assert "my_task:Regression" in capsys.readouterr().err and not out.exists()


def test_export_from_a_sharded_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A run with sharded checkpoints (.dcp directories) exports to OpenPCDet's container like a single file does:
    # the same model tensors under OpenPCDet's names; the optimizer state stays in the shards (said, not silent).
    from trainwell.tasks.detection3d.openpcdet_format import to_openpcdet_keys

    run = tmp_path / "run"
    assert main(["train", TINY, f"run.dir={run}", "checkpoint.format=sharded", "train.epochs=1"]) == 0
    last = run / "checkpoints" / "last.dcp"
    assert main(["export", str(last), "--out", str(tmp_path / "plain.pt")]) == 0
    capsys.readouterr()
    assert main(["export", str(last), "--format", "openpcdet", "--out", str(tmp_path / "c.pth")]) == 0
    assert "optimizer state is not converted" in capsys.readouterr().out
    container = torch.load(tmp_path / "c.pth", weights_only=True)
    plain = torch.load(tmp_path / "plain.pt", weights_only=True)
    expected = to_openpcdet_keys(plain, container["it"])
    assert container["optimizer_state"] is None and container["it"] > 0
    assert container["model_state"].keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(container["model_state"][name], tensor), name
