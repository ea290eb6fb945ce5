"""The RGB-D network: shapes, soft-argmax and back-projection, SyncBatchNorm conversion."""

import pytest
import torch

from trainwell.tasks.hand_pose.image_model import (
    RGBDHandNet,
    RGBDNetConfig,
    back_project,
    reference_depth_mm,
    skinned_vertices,
    soft_argmax_2d,
)
from trainwell.tasks.hand_pose.surface import NUM_VERTICES

K = torch.tensor([[[150.0, 0, 30.0], [0, 160.0, 34.0], [0, 0, 1]]]).expand(3, 3, 3)


def test_output_shapes_and_root_relative() -> None:
    net = RGBDHandNet(RGBDNetConfig(width=8, blocks=[1, 2, 1], head_width=16)).eval()
    with torch.no_grad():
        out = net(torch.rand(3, 3, 64, 64), 400 + 200 * torch.rand(3, 1, 64, 64), K)
    assert out["joints_mm"].shape == (3, 21, 3) and out["aux_joints_mm"].shape == (3, 21, 3)
    assert out["keypoints_2d_px"].shape == (3, 21, 2) and out["vertices_mm"].shape == (3, NUM_VERTICES, 3)
    assert float(out["joints_mm"][:, 0].abs().max()) == 0.0
    assert float(out["keypoints_2d_px"].min()) >= 0 and float(out["keypoints_2d_px"].max()) <= 64


def test_soft_argmax_of_a_peaked_map_is_the_cell_centre() -> None:
    logits = torch.full((1, 2, 16, 16), -1e4)
    logits[0, 0, 3, 10] = 0.0  # row 3, column 10
    logits[0, 1, 15, 0] = 0.0
    uv, weights = soft_argmax_2d(logits, stride=4)
    assert torch.allclose(uv[0], torch.tensor([[42.0, 14.0], [2.0, 62.0]]))
    assert torch.allclose(weights.sum(dim=(2, 3)), torch.ones(1, 2))


def test_back_projection_inverts_the_projection() -> None:
    points = torch.tensor([[[10.0, -20.0, 400.0], [-35.0, 5.0, 520.0]]]).expand(3, 2, 3)
    uvw = torch.einsum("bij,bnj->bni", K, points)
    assert torch.allclose(back_project(uvw[..., :2] / uvw[..., 2:], points[..., 2], K), points, atol=1e-3)


def test_reference_depth_ignores_missing_returns() -> None:
    depth = torch.zeros(2, 1, 4, 4)
    depth[0, 0, :2] = 600.0
    assert reference_depth_mm(depth).tolist() == [600.0, 500.0]


def test_sync_batchnorm_conversion_and_width() -> None:
    small = RGBDHandNet(RGBDNetConfig(width=8, head_width=16))
    large = RGBDHandNet(RGBDNetConfig(width=16, head_width=32))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(large) > count(small)
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(small)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
    assert not any(type(m) is torch.nn.BatchNorm2d for m in converted.modules())


def test_the_demo_options_keep_the_outputs_and_the_root_relative_contract() -> None:
    cfg = RGBDNetConfig(
        width=8,
        blocks=[1, 1, 1, 1],
        head_width=16,
        global_context=True,
        refine_width=32,
        vertex_head="skinned",
    )
    net = RGBDHandNet(cfg).eval()
    assert net.vertices is None  # the skinned mesh has no parameters
    with torch.no_grad():
        out = net(torch.rand(3, 3, 64, 64), 400 + 200 * torch.rand(3, 1, 64, 64), K)
    assert out["joints_mm"].shape == (3, 21, 3) and out["vertices_mm"].shape == (3, NUM_VERTICES, 3)
    assert float(out["joints_mm"][:, 0].abs().max()) == 0.0
    assert torch.allclose(out["vertices_mm"], skinned_vertices(out["joints_mm"]))
    fine = RGBDHandNet(RGBDNetConfig(width=8, head_width=16, heatmap_stride=2)).eval()
    with torch.no_grad():
        assert fine(torch.rand(1, 3, 64, 64), 500 + torch.rand(1, 1, 64, 64), K[:1])["heatmap_logits"].shape == (
            1,
            21,
            32,
            32,
        )


def test_a_skinned_mesh_on_the_true_joints_is_the_rendered_mesh() -> None:
    import numpy as np

    from trainwell.tasks.hand_pose.render import RenderConfig, render_rgbd
    from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig

    sample = render_rgbd(SyntheticHandsConfig(), RenderConfig(crop_size_px=16), 0, "val", np.arange(16))
    # the rendered mesh uses the hand's true scale; the skinned one estimates it from the bone lengths
    error_mm = (skinned_vertices(sample["joints_rel_mm"]) - sample["vertices_rel_mm"]).norm(dim=-1)
    assert float(error_mm.max()) < 0.5 and float(error_mm.mean()) < 0.1


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"blocks": [1, 1]}, "3 or 4 stages"),
        ({"heatmap_stride": 8}, "heatmap_stride"),
        ({"vertex_head": "mano"}, "vertex_head"),
    ],
)
def test_a_bad_model_option_names_its_key(option: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RGBDHandNet(RGBDNetConfig(width=8, head_width=16, **option))


def test_the_absolute_wrist_projects_onto_its_keypoint_at_its_depth() -> None:
    net = RGBDHandNet(RGBDNetConfig(width=8, head_width=16)).eval()
    with torch.no_grad():
        out = net(torch.rand(3, 3, 64, 64), 400 + 200 * torch.rand(3, 1, 64, 64), K)
    root = out["root_cam_mm"]  # (3, 3) camera frame, mm
    assert torch.allclose(root[:, 2], out["root_depth_mm"])
    u = K[:, 0, 0] * root[:, 0] / root[:, 2] + K[:, 0, 2]  # the pinhole projection, written out
    v = K[:, 1, 1] * root[:, 1] / root[:, 2] + K[:, 1, 2]
    assert torch.allclose(torch.stack((u, v), -1), out["keypoints_2d_px"][:, 0], atol=1e-3)


def test_the_root_loss_trains_the_absolute_wrist() -> None:
    import numpy as np

    from trainwell.tasks.hand_pose.render import RenderConfig, render_rgbd
    from trainwell.tasks.hand_pose.rgbd_losses import root_position_loss
    from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig

    batch = render_rgbd(SyntheticHandsConfig(), RenderConfig(crop_size_px=32), 0, "train", np.arange(8))
    torch.manual_seed(0)
    net = RGBDHandNet(RGBDNetConfig(width=8, head_width=16))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    errors = []
    for _ in range(40):
        out = net(batch["rgb"], batch["depth_mm"], batch["intrinsics"])
        loss = root_position_loss(out["root_cam_mm"], batch["root_cam_mm"])
        errors.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert min(errors[-5:]) < 0.5 * errors[0], f"root error {errors[0]:.1f} → {errors[-1]:.1f} mm"
