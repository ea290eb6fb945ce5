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


def write_ho3d_evaluation_frame(root: Path, seq: str, frame: str, depth_m: float) -> None:
    """One HO3D evaluation frame in the dataset's layout: rgb PNG, depth PNG (R + 256 G encoding), meta pickle."""
    import pickle

    from PIL import Image

    folder = root / "evaluation" / seq
    for sub in ("rgb", "depth", "meta"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(frame) + int(depth_m * 100))
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(folder / "rgb" / f"{frame}.png")
    value = np.full((120, 160), round(depth_m / 0.00012498664727900177), dtype=np.uint16)
    encoded = np.stack([(value & 0xFF).astype(np.uint8), (value >> 8).astype(np.uint8), np.zeros_like(value, np.uint8)])
    Image.fromarray(np.moveaxis(encoded, 0, -1)).save(folder / "depth" / f"{frame}.png")
    meta = {
        "handJoints3D": np.array([0.01, -0.02, -depth_m]),  # the evaluation split gives the wrist only (OpenGL frame)
        "camMat": np.array([[300.0, 0, 80], [0, 300.0, 60], [0, 0, 1]]),
        "handBoundingBox": np.array([40.0, 20.0, 120.0, 100.0]),
    }
    with open(folder / "meta" / f"{frame}.pkl", "wb") as f:
        pickle.dump(meta, f, protocol=2)


def test_predict_on_an_ho3d_root_follows_evaluation_txt(tmp_path: Path) -> None:
    listed = [("SM1", "0002", 0.4), ("AP10", "0000", 1.0), ("SM1", "0000", 0.7)]  # not the sorted order
    for seq, frame, depth in listed:
        write_ho3d_evaluation_frame(tmp_path, seq, frame, depth)
    write_ho3d_evaluation_frame(tmp_path, "SM1", "0009", 0.55)  # on disk but not listed: not predicted
    (tmp_path / "evaluation.txt").write_text("".join(f"{s}/{f}\n" for s, f, _ in listed))
    torch.manual_seed(0)
    net = RGBDHandNet(RGBDNetConfig(width=8, head_width=16)).eval()
    with torch.no_grad():
        summary = predict_file(net, tmp_path, tmp_path / "out", crop_size_px=32)
    assert summary["dataset"] == "HO3D" and summary["num_frames"] == 3
    xyz, verts = official_read(tmp_path / "out" / "ho3d" / "pred.json", 3)
    # An untrained net puts the wrist near the crop's median depth: each entry sits at its listed frame's depth.
    wrist_depth_m = [-x[0, 2] for x in xyz]  # OpenGL frame: z backwards
    assert np.allclose(wrist_depth_m, [d for _, _, d in listed], atol=0.15)
    assert verts[0].shape == (383, 3)


def test_predict_names_a_listed_frame_missing_on_disk_and_refuses_freihand(tmp_path: Path) -> None:
    from trainwell.tasks.hand_pose.readers import DatasetLayoutError

    write_ho3d_evaluation_frame(tmp_path, "SM1", "0000", 0.5)
    write_ho3d_evaluation_frame(tmp_path, "SM1", "0001", 0.5)
    (tmp_path / "evaluation" / "SM1" / "depth" / "0001.png").unlink()
    (tmp_path / "evaluation.txt").write_text("SM1/0000\nSM1/0001\n")
    net = RGBDHandNet(RGBDNetConfig(width=8, head_width=16)).eval()
    with pytest.raises(DatasetLayoutError, match=r"line 2 lists frame 'SM1/0001'.*depth/0001\.png is missing"):
        predict_file(net, tmp_path, tmp_path / "out", crop_size_px=32)
    assert not (tmp_path / "out" / "ho3d" / "pred.json").exists()

    freihand = tmp_path / "freihand"
    freihand.mkdir()
    (freihand / "evaluation_K.json").write_text(json.dumps([[[480.0, 0, 112], [0, 480.0, 112], [0, 0, 1]]]))
    with pytest.raises(DatasetLayoutError, match="no depth"):
        predict_file(net, freihand, tmp_path / "out", crop_size_px=32)
