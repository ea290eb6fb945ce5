"""PA-MPJPE: trainwell's batched float64 fit vs the usual per-sample NumPy loop, one process, same data.

The reference is the HMR / MMPose ``compute_similarity_transform`` applied sample by sample, followed by
the mean joint distance, which is how most repositories compute PA-MPJPE. Both sides get the same
float64 camera-space hands (~500 mm from the camera) and must agree to 1e-6 mm. Times are the best of
``--repeats`` runs (the NumPy loop: of ``--numpy-repeats``). torch runs with its default thread count and
with one thread (the NumPy loop uses one core), the two settings alternating run by run so that load from
other processes hits both alike. For scale, the time ``torch.linalg.svd`` alone takes on the ``(B, 3, 3)``
covariances is printed too: trainwell solves them in closed form instead (see docs/metrics.md).

    python benchmarks/pose_metrics.py [--samples 100000] [--joints 21] [--repeats 7] [--numpy-repeats 2]
    python benchmarks/pose_metrics.py --guard   # the size of the FreiHAND/HO3D servers' 1e-8 norm guard

``--guard`` measures, on 1000 generated hands in metres at three joint spreads, how far the servers'
``align_w_scale`` (which divides each centred set by its norm + 1e-8) lands from the least-squares optimum:
the relative scale bias, the per-joint difference in mm, and how many joint × threshold pairs of the
100-threshold AUC grid it flips (the figures docs/metrics.md quotes).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import torch

from trainwell.metrics import SERVER_NORM_GUARD_M, pa_joint_errors, pa_mpjpe


def similarity_transform(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """HMR / MMPose ``compute_similarity_transform``: ``s1`` (N, 3) aligned onto ``s2`` (N, 3)."""
    x1, x2 = s1.T, s2.T
    mu1, mu2 = x1.mean(axis=1, keepdims=True), x2.mean(axis=1, keepdims=True)
    c1, c2 = x1 - mu1, x2 - mu2
    var1 = np.sum(c1**2)
    k = c1.dot(c2.T)
    u, _, vh = np.linalg.svd(k)
    v = vh.T
    z = np.eye(u.shape[0])
    z[-1, -1] *= np.sign(np.linalg.det(u.dot(v.T)))
    r = v.dot(z.dot(u.T))
    scale = np.trace(r.dot(k)) / var1
    t = mu2 - scale * r.dot(mu1)
    return (scale * r.dot(x1) + t).T


def numpy_loop(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-sample PA-MPJPE (B,) in mm, one ``similarity_transform`` per sample."""
    out = np.empty(len(pred))
    for i in range(len(pred)):
        aligned = similarity_transform(pred[i], gt[i])
        out[i] = np.sqrt(((aligned - gt[i]) ** 2).sum(axis=-1)).mean()
    return out


def guard_report(samples: int = 1000) -> None:
    """Print the size of the servers' 1e-8 m norm guard against trainwell's optimum (mirrors allowed)."""
    thresholds_mm = np.linspace(0.0, 50.0, 100)
    for spread_mm in (40.0, 25.0, 15.0):
        rng = np.random.default_rng(1)
        gt = (rng.normal(0.0, spread_mm, (samples, 21, 3)) + np.array([30.0, -20.0, 500.0])) / 1000  # metres
        pred = gt + rng.normal(0.0, 0.008, gt.shape) + rng.normal(0.0, 0.02, (samples, 1, 3))
        norm = np.linalg.norm(pred - pred.mean(axis=1, keepdims=True), axis=(1, 2))
        bias = 1 - norm**2 / (norm + SERVER_NORM_GUARD_M) ** 2  # scale shrink of the guarded fit
        args = (torch.from_numpy(pred), torch.from_numpy(gt))
        guarded = pa_joint_errors(*args, allow_reflection=True, norm_guard_m=SERVER_NORM_GUARD_M, unit="m").numpy()
        optimum = pa_joint_errors(*args, allow_reflection=True, unit="m").numpy()
        diff = np.abs(guarded - optimum)
        flips = sum(int(((guarded <= t) != (optimum <= t)).sum()) for t in thresholds_mm)
        print(
            f"joint spread {spread_mm:4.0f} mm (|p_c| {norm.min():.2f}-{norm.max():.2f} m): scale bias median "
            f"{np.median(bias):.2e} max {bias.max():.2e}; per-joint diff median {np.median(diff):.1e} max "
            f"{diff.max():.1e} mm; PCK flips {flips} of {diff.size * len(thresholds_mm)}"
        )


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--joints", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--numpy-repeats", type=int, default=2)
    parser.add_argument("--guard", action="store_true", help="measure the servers' 1e-8 norm guard and exit")
    args = parser.parse_args()
    if args.guard:
        guard_report()
        return

    rng = np.random.default_rng(0)
    gt = rng.normal(0.0, 40.0, (args.samples, args.joints, 3)) + np.array([30.0, -20.0, 500.0])
    pred = gt + rng.normal(0.0, 8.0, gt.shape) + rng.normal(0.0, 20.0, (args.samples, 1, 3))
    pred_t, gt_t = torch.from_numpy(pred), torch.from_numpy(gt)  # views, no copy

    default_threads = torch.get_num_threads()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{args.samples} samples x {args.joints} joints, float64"
    )

    t_numpy = float("inf")
    for _ in range(max(1, args.numpy_repeats)):
        start = time.perf_counter()
        expected = numpy_loop(pred, gt)
        t_numpy = min(t_numpy, time.perf_counter() - start)
    print(f"NumPy per-sample loop:         {t_numpy:8.3f} s  ({t_numpy / args.samples * 1e6:.1f} us/sample)")

    settings = list(dict.fromkeys((default_threads, 1)))
    best = dict.fromkeys(settings, float("inf"))
    diff = 0.0
    for _ in range(args.repeats):
        for threads in settings:  # alternate, so that a busy neighbour slows both settings alike
            torch.set_num_threads(threads)
            got = pa_mpjpe(pred_t, gt_t)  # warm-up and check
            diff = max(diff, float(np.abs(got.numpy() - expected).max()))
            best[threads] = min(best[threads], timed(lambda: pa_mpjpe(pred_t, gt_t)))
    for threads in settings:
        t_torch = best[threads]
        print(
            f"trainwell pa_mpjpe, {threads} thread(s): {t_torch:8.3f} s  -> {t_numpy / t_torch:5.1f}x faster, "
            f"max |diff| {diff:.2e} mm {'OK' if diff <= 1e-6 else 'MISMATCH'}"
        )
    torch.set_num_threads(1)
    cov = torch.randn(args.samples, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t_svd = min(timed(lambda: torch.linalg.svd(cov)) for _ in range(args.repeats))
    print(f"for scale: torch.linalg.svd alone on the covariances, 1 thread: {t_svd:.3f} s")
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
