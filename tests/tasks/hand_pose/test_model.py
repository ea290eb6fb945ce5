"""The lifting network: shapes, units, a root fixed at 0, and independence from the camera."""

import math

import numpy as np
import torch

from trainwell.tasks.hand_pose.model import NUM_FEATURES, HandLiftingNet, LiftingNetConfig, lifting_features
from trainwell.tasks.hand_pose.synthetic import SyntheticHandsConfig, generate_hands


def _batch(n: int = 64) -> dict[str, torch.Tensor]:
    return generate_hands(SyntheticHandsConfig(), seed=0, split="val", indices=np.arange(n))


def test_output_shapes_root_and_units() -> None:
    torch.manual_seed(0)
    cfg = LiftingNetConfig(hidden=64, num_blocks=2, dropout=0.0, output_scale_mm=100.0)
    net = HandLiftingNet(cfg).eval()
    b = _batch()
    out = net(b["keypoints_2d_px"], b["visibility"], b["intrinsics"])
    assert set(out) == {"joints_mm", "aux_joints_mm"}
    for value in out.values():
        assert value.shape == (64, 21, 3) and value.dtype == torch.float32
        assert bool((value[:, 0] == 0).all())  # root-relative: the wrist is exactly 0
    # The heads predict mm / output_scale_mm: halving the scale halves every output.
    half = HandLiftingNet(LiftingNetConfig(hidden=64, num_blocks=2, dropout=0.0, output_scale_mm=50.0)).eval()
    half.load_state_dict(net.state_dict())
    torch.testing.assert_close(half(b["keypoints_2d_px"], b["visibility"], b["intrinsics"])["joints_mm"],
                               out["joints_mm"] / 2)  # fmt: skip


def test_features_do_not_depend_on_the_camera() -> None:
    b = _batch()
    features, roll = lifting_features(b["keypoints_2d_px"], b["visibility"], b["intrinsics"])
    assert features.shape == (64, NUM_FEATURES) and roll.shape == (64, 2)
    # The same rays seen by another camera: f × 1.7, principal point moved by (30, -20) px.
    k2 = b["intrinsics"].clone()
    k2[:, 0, 0] *= 1.7
    k2[:, 1, 1] *= 1.7
    k2[:, :2, 2] += torch.tensor([30.0, -20.0])
    principal, principal2 = b["intrinsics"][:, None, :2, 2], k2[:, None, :2, 2]
    kp2 = (b["keypoints_2d_px"] - principal) * 1.7 + principal2
    features2, roll2 = lifting_features(kp2, b["visibility"], k2)
    torch.testing.assert_close(features2, features, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(roll2, roll, atol=1e-5, rtol=1e-5)


def test_prediction_turns_with_the_camera_about_its_optical_axis() -> None:
    """Roll equivariance: the same hand seen by a camera rolled by t gives the prediction rolled by t."""
    torch.manual_seed(0)
    net = HandLiftingNet(LiftingNetConfig(hidden=64)).eval()
    b = _batch()
    k = b["intrinsics"]
    fx, fy, cx, cy = k[:, None, 0, 0], k[:, None, 1, 1], k[:, None, 0, 2], k[:, None, 1, 2]
    x, y = (b["keypoints_2d_px"][..., 0] - cx) / fx, (b["keypoints_2d_px"][..., 1] - cy) / fy
    t = 2.1
    c, s = math.cos(t), math.sin(t)
    rolled_px = torch.stack(((c * x - s * y) * fx + cx, (s * x + c * y) * fy + cy), dim=-1)
    pred = net(b["keypoints_2d_px"], b["visibility"], k)["joints_mm"]
    rolled_pred = net(rolled_px, b["visibility"], k)["joints_mm"]
    rotation = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(rolled_pred, pred @ rotation.T, atol=1e-3, rtol=1e-4)


def test_invisible_keypoints_do_not_influence_the_prediction() -> None:
    torch.manual_seed(0)
    net = HandLiftingNet(LiftingNetConfig(hidden=64, num_blocks=1)).eval()
    b = _batch()
    scrambled = b["keypoints_2d_px"].clone()
    hidden = b["visibility"] == 0
    assert bool(hidden.any())
    scrambled[hidden] = torch.randn(int(hidden.sum()), 2) * 1000
    out = net(b["keypoints_2d_px"], b["visibility"], b["intrinsics"])["joints_mm"]
    torch.testing.assert_close(net(scrambled, b["visibility"], b["intrinsics"])["joints_mm"], out)


def test_the_model_can_fit_a_small_batch() -> None:
    torch.manual_seed(0)
    net = HandLiftingNet(LiftingNetConfig(hidden=128, num_blocks=1, dropout=0.0, norm="layer"))
    b = _batch(16)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        out = net(b["keypoints_2d_px"], b["visibility"], b["intrinsics"])["joints_mm"]
        loss = (out - b["joints_rel_mm"]).norm(dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.1 * losses[0]  # mm: from ~80 to a few
