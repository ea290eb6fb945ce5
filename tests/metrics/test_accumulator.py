"""PoseAccumulator: order-independent results, the distributed hand-off, and the protocol options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainwell.metrics import PoseAccumulator, mpjpe, n_mpjpe, pa_mpjpe

NUM, JOINTS, VERTS = 60, 21, 40


def dataset(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small camera-space validation set (mm) with visibility and meshes, in dataset-index order."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.randn(NUM, JOINTS, 3, generator=g, dtype=torch.float64) * 40 + torch.tensor([0.0, 0.0, 500.0])
    pred = gt + torch.randn(NUM, JOINTS, 3, generator=g, dtype=torch.float64) * 12
    verts = torch.randn(NUM, VERTS, 3, generator=g, dtype=torch.float64) * 40 + 500
    pred_verts = verts + torch.randn(NUM, VERTS, 3, generator=g, dtype=torch.float64) * 6
    mask = torch.rand(NUM, JOINTS, generator=g) > 0.25
    mask[:, 0] = True
    return {"pred": pred, "gt": gt, "mask": mask, "verts": verts, "pred_verts": pred_verts}


def feed(acc: PoseAccumulator, data: dict[str, torch.Tensor], order: torch.Tensor, batch: int) -> None:
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        acc.update(
            data["pred"][idx],
            data["gt"][idx],
            idx,
            data["mask"][idx],
            pred_vertices=data["pred_verts"][idx],
            target_vertices=data["verts"][idx],
        )


def make(**kwargs: object) -> PoseAccumulator:
    return PoseAccumulator(evaluate_vertices=True, save_predictions=True, **kwargs)  # type: ignore[arg-type]


def test_shuffled_and_split_updates_give_identical_metrics() -> None:
    data = dataset()
    single = make(keypoint_indices=list(range(1, 21, 2)))
    feed(single, data, torch.arange(NUM), NUM)
    shuffled = make(keypoint_indices=list(range(1, 21, 2)))
    feed(shuffled, data, torch.randperm(NUM, generator=torch.Generator().manual_seed(1)), 7)
    assert shuffled.compute() == single.compute()  # bitwise: means are taken in index order
    torch.testing.assert_close(shuffled.per_joint_pa_mpjpe(), single.per_joint_pa_mpjpe(), rtol=0, atol=0)


def test_results_survive_the_distributed_round_trip() -> None:
    data = dataset(2)
    single = make()
    feed(single, data, torch.arange(NUM), 16)
    # Two "ranks" with interleaved, uneven shards, gathered and sorted the way the engine does.
    ranks = [make(), make()]
    order = torch.randperm(NUM, generator=torch.Generator().manual_seed(3))
    feed(ranks[0], data, order[:23], 5)
    feed(ranks[1], data, order[23:], 9)
    parts = [acc.local_results() for acc in ranks]
    indices = torch.cat([p[0] for p in parts])
    results = {name: torch.cat([p[1][name] for p in parts]) for name in parts[0][1]}
    sort = torch.argsort(indices, stable=True)
    gathered = make()
    gathered.load_results(indices[sort], {name: value[sort] for name, value in results.items()})
    assert gathered.compute() == single.compute()
    got_idx, got_pred = gathered.predictions()
    torch.testing.assert_close(got_idx, torch.arange(NUM))
    torch.testing.assert_close(got_pred, data["pred"], rtol=0, atol=0)
    # And local_results -> load_results on the same object is the identity.
    again = make()
    again.load_results(*single.local_results())
    assert again.compute() == single.compute()


def test_metrics_are_the_means_of_the_pure_functions() -> None:
    data = dataset(4)
    acc = PoseAccumulator(root_index=0)
    acc.update(data["pred"], data["gt"], torch.arange(NUM), data["mask"])
    metrics = acc.compute()
    pred, gt, mask = data["pred"], data["gt"], data["mask"]
    assert metrics["mpjpe"] == pytest.approx(float(mpjpe(pred, gt, mask=mask).mean()), abs=1e-12)
    assert metrics["pa_mpjpe"] == pytest.approx(float(pa_mpjpe(pred, gt, mask=mask).mean()), abs=1e-12)
    assert metrics["n_mpjpe"] == pytest.approx(float(n_mpjpe(pred, gt, mask=mask).mean()), abs=1e-12)
    assert set(metrics) == {
        "mpjpe",
        "pa_mpjpe",
        "mpjpe_sc_tr",
        "n_mpjpe",
        "pck@20mm",
        "pa_pck@20mm",
        "auc_0_50mm",
        "pa_auc_0_50mm",
    }
    assert 0.0 < metrics["pa_auc_0_50mm"] < 1.0 and metrics["pa_mpjpe"] < metrics["mpjpe"]


def test_keypoint_subset_and_root_follow_the_formula() -> None:
    data = dataset(5)
    pred, gt = data["pred"].numpy(), data["gt"].numpy()
    subset, root = [4, 8, 12, 16, 20], 9  # the root is not among the evaluated joints
    acc = PoseAccumulator(root_index=root, keypoint_indices=subset)
    acc.update(data["pred"], data["gt"], torch.arange(NUM))
    rel = (pred - pred[:, root : root + 1]) - (gt - gt[:, root : root + 1])
    per_joint = np.linalg.norm(rel[:, subset], axis=-1)
    assert acc.compute()["mpjpe"] == pytest.approx(per_joint.mean(axis=1).mean(), abs=1e-9)
    np.testing.assert_allclose(acc.per_joint_mpjpe().numpy(), per_joint.mean(axis=0), atol=1e-9)
    pa_subset = pa_mpjpe(data["pred"][:, subset], data["gt"][:, subset])  # fitted on the subset only
    assert acc.compute()["pa_mpjpe"] == pytest.approx(float(pa_subset.mean()), abs=1e-9)


def test_vertex_metrics_and_unit_m() -> None:
    data = dataset(6)
    in_mm = make()
    feed(in_mm, data, torch.arange(NUM), 32)
    in_m = make(unit="m")
    metres = {k: v / 1000.0 if v.is_floating_point() else v for k, v in data.items()}
    feed(in_m, metres, torch.arange(NUM), 32)
    a, b = in_mm.compute(), in_m.compute()
    assert a.keys() == b.keys() and {"mpvpe", "pa_mpvpe", "f@5mm", "f@15mm", "pa_f@5mm", "pa_f@15mm"} <= a.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), key
    assert a["pa_f@15mm"] > a["pa_f@5mm"] > 0.0


def test_clear_errors() -> None:
    acc = PoseAccumulator()
    with pytest.raises(ValueError, match="no samples"):
        acc.compute()
    data = dataset(7)
    acc.update(data["pred"][:4], data["gt"][:4], torch.arange(4))
    acc.update(data["pred"][:2], data["gt"][:2], torch.arange(2))
    with pytest.raises(ValueError, match="repeated dataset indices"):
        acc.compute()
    acc.reset()
    with pytest.raises(ValueError, match="no samples"):
        acc.compute()
    with pytest.raises(ValueError, match="save_predictions"):
        acc.predictions()
    plain = PoseAccumulator()  # results without vertices or predictions, loaded into one that expects them
    plain.update(data["pred"], data["gt"], torch.arange(NUM))
    indices, results = plain.local_results()
    loaded = make()
    loaded.load_results(indices, results)
    with pytest.raises(ValueError, match=r"lack \['f_score', 'mpvpe', 'pa_f_score', 'pa_mpvpe', 'pred'\]"):
        loaded.compute()
    with pytest.raises(ValueError, match="pred_vertices"):
        make().update(data["pred"], data["gt"], torch.arange(NUM))
    with pytest.raises(ValueError, match="unit"):
        PoseAccumulator(unit="cm")  # type: ignore[arg-type]
