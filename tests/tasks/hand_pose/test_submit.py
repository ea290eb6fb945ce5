"""Benchmark files round-trip through readers that follow the official evaluation scripts; predict() on crops."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainwell.tasks.hand_pose.image_model import RGBDHandNet, RGBDNetConfig
from trainwell.tasks.hand_pose.render import RenderConfig, render_rgbd
from trainwell.tasks.hand_pose.rgbd_task import RGBDHandEvaluator
from trainwell.tasks.hand_pose.submit import predict_file, write_freihand_pred, write_ho3d_pred
from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig

MANO_TO_SIMPLE = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]


def official_read(path: Path, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """As FreiHAND's / HO3D's eval.py: json.load, two lists of one entry per sample, np.array each."""
    with open(path) as fi:
        pred = json.load(fi)
    assert len(pred) == 2 and len(pred[0]) == n and len(pred[1]) == n, "Expected format mismatch."
    return [np.array(x) for x in pred[0]], [np.array(x) for x in pred[1]]


def test_freihand_and_ho3d_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    joints_mm = rng.normal(0, 40, (3, 21, 3)) + np.array([0, 0, 500])
    verts_mm = rng.normal(0, 40, (3, 383, 3)) + np.array([0, 0, 500])
    xyz, verts = official_read(write_freihand_pred(tmp_path / "f" / "pred.json", joints_mm, verts_mm), 3)
    assert np.allclose(np.stack(xyz), joints_mm / 1000) and np.allclose(np.stack(verts), verts_mm / 1000)

    xyz, verts = official_read(write_ho3d_pred(tmp_path / "h" / "pred.json", joints_mm, verts_mm), 3)
    for i in range(3):
        assert np.all(xyz[i][:, 2] < 0)  # pred.py's OpenGL check
        back = (xyz[i] * [1, -1, -1])[MANO_TO_SIMPLE] * 1000  # HO3D → OpenCV frame, OpenPose order, mm
        assert np.allclose(back, joints_mm[i])
        # align_sc_tr's scale bone (0, 4) in HO3D order is the wrist → middle MCP, joints (0, 9) of the pack.
        assert np.allclose(xyz[i][4] - xyz[i][0], ((joints_mm[i][9] - joints_mm[i][0]) * [1, -1, -1]) / 1000)


def test_evaluator_writes_files_in_index_order(tmp_path: Path) -> None:
    batch = render_rgbd(SyntheticHandsConfig(), RenderConfig(crop_size_px=32), 0, "val", np.arange(4))
    net = RGBDHandNet(RGBDNetConfig(width=8, head_width=16)).eval()
    evaluator = RGBDHandEvaluator()
    with torch.no_grad():
        for order in ([2, 3], [0, 1]):  # fed out of order
            part = {k: v[order] for k, v in batch.items()}
            evaluator.update_with_outputs(
                net(part["rgb"], part["depth_mm"], part["intrinsics"]), part, torch.tensor(order)
            )
        metrics = evaluator.compute()
        reference = net(batch["rgb"], batch["depth_mm"], batch["intrinsics"])
    assert {"mpjpe", "pa_mpjpe", "mpvpe"} <= metrics.keys()
    paths = evaluator.save_outputs(tmp_path)
    xyz, _ = official_read(paths[0], 4)
    rel = np.stack(xyz) * 1000 - np.stack(xyz)[:, :1] * 1000
    assert np.allclose(rel, reference["joints_mm"].numpy(), atol=1e-2)


def test_predict_on_an_npz_of_crops(tmp_path: Path) -> None:
    batch = render_rgbd(SyntheticHandsConfig(), RenderConfig(crop_size_px=32), 0, "val", np.arange(2))
    rgb_u8 = (batch["rgb"] * 255).round().to(torch.uint8).numpy()
    np.savez(
        tmp_path / "crops.npz", rgb=rgb_u8, depth_mm=batch["depth_mm"].numpy(), intrinsics=batch["intrinsics"].numpy()
    )
    net = RGBDHandNet(RGBDNetConfig(width=8, head_width=16)).eval()
    with torch.no_grad():
        result = predict_file(net, tmp_path / "crops.npz", tmp_path / "out", crop_size_px=32)
        direct = net(torch.from_numpy(rgb_u8).float() / 255, batch["depth_mm"], batch["intrinsics"])
    assert np.allclose(np.array(result["joints_rel_mm"]), direct["joints_mm"].numpy(), atol=1e-4)
    xyz, _ = official_read(tmp_path / "out" / "freihand" / "pred.json", 2)
    assert np.allclose(np.stack(xyz) * 1000, np.array(result["joints_cam_mm"]), atol=1e-3)
    assert (tmp_path / "out" / "ho3d" / "pred.json").is_file()


def test_predict_on_an_image_with_sidecar_and_depth(tmp_path: Path) -> None:
    from PIL import Image

    from trainwell.tasks.hand_pose.submit import crop_image

    h, w = 100, 120
    image = np.zeros((h, w, 3), np.uint8)
    image[40:44, 70:74] = 255  # a bright 4 px square centred on pixel coordinate (72, 42)
    Image.fromarray(image).save(tmp_path / "frame.png")
    value = np.full((h, w), round(0.6 / 0.00012498664727900177), np.uint16)  # 600 mm everywhere, HO3D encoding
    depth = np.stack([(value & 0xFF).astype(np.uint8), (value >> 8).astype(np.uint8), np.zeros((h, w), np.uint8)], -1)
    Image.fromarray(depth).save(tmp_path / "frame_depth.png")
    k = [[300.0, 0.0, 60.0], [0.0, 300.0, 50.0], [0.0, 0.0, 1.0]]
    box = [50.0, 20.0, 90.0, 60.0]
    (tmp_path / "frame.json").write_text(json.dumps({"K": k, "bbox_px": box}))

    # The crop: a point's pixel in the crop is its pixel in the image mapped by the crop's scale and offset, and the
    # image content moves with it.
    rgb, depth_mm, k_crop = crop_image(
        torch.from_numpy(image).permute(2, 0, 1).float() / 255, torch.full((1, h, w), 600.0), torch.tensor(k), box, 32
    )
    side, cx, cy = 40 * 1.25, 70.0, 40.0
    expected = ((72 - (cx - side / 2)) * 32 / side, (42 - (cy - side / 2)) * 32 / side)
    point = torch.tensor([[[(72 - 60) / 300 * 500, (42 - 50) / 300 * 500, 500.0]]])
    uvw = torch.einsum("bij,bnj->bni", k_crop.double(), point.double())
    assert np.allclose((uvw[0, 0, :2] / uvw[0, 0, 2]).numpy(), expected, atol=1e-4)
    brightest = int(rgb[0].sum(0).flatten().argmax())
    assert abs(brightest % 32 + 0.5 - expected[0]) <= 1.0 and abs(brightest // 32 + 0.5 - expected[1]) <= 1.0
    assert float(depth_mm.min()) == 600.0

    net = RGBDHandNet(RGBDNetConfig(width=8, head_width=16)).eval()
    with torch.no_grad():
        result = predict_file(net, tmp_path / "frame.png", None, crop_size_px=32)
    assert np.array(result["joints_cam_mm"]).shape == (1, 21, 3)


def test_a_diverged_models_predictions_are_written_but_foreign_arrays_in_the_wrong_frame_refused(
    tmp_path: Path,
) -> None:
    behind = np.zeros((2, 21, 3))
    behind[..., 2] = -400.0  # every joint behind the camera
    with pytest.raises(ValueError, match="converted twice"):
        write_ho3d_pred(tmp_path / "refused.json", behind, np.zeros((2, 5, 3)))
    batch = render_rgbd(SyntheticHandsConfig(), RenderConfig(crop_size_px=16), 0, "val", np.arange(2))
    outputs = {  # the true hands, but a diverged root-depth head that puts them behind the camera
        "joints_mm": batch["joints_rel_mm"],
        "vertices_mm": batch["vertices_rel_mm"],
        "keypoints_2d_px": batch["keypoints_2d_px"],
        "root_cam_mm": batch["root_cam_mm"] * torch.tensor([1.0, 1.0, -1.0]),  # z < 0
    }
    evaluator = RGBDHandEvaluator()
    evaluator.update_with_outputs(outputs, batch, torch.tensor([0, 1]))
    paths = evaluator.save_outputs(tmp_path / "eval")  # an evaluation during training must not stop the run
    assert [p.parent.name for p in paths] == ["freihand", "ho3d"] and all(p.is_file() for p in paths)
