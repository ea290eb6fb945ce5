"""Rendered synthetic RGB-D hand crops: the synthetic hands' capsule surface ray-cast into depth (mm) and RGB.

Every sample is a pure function of ``(seed, split, index)``: the hand and its camera come from
:func:`~trainwell.tasks.hand_pose.synthetic.generate_hands`; the rendering's random numbers from a
``torch.Generator`` seeded with a hash of the same key (a different stream), one per sample, so a crop does
not depend on the batch it is rendered in. All geometry is element-wise (no matmul), vectorised over
``(batch, pixel, capsule)``.

The crop is a *virtual camera*: a square box around the projected joints (``crop_margin`` × their extent,
plus the capsules' radius) is mapped onto ``crop_size_px`` pixels, which turns the full camera's intrinsics
``K`` into the crop's ``K_crop = [[s fx, 0, s (cx - x0)], [0, s fy, s (cy - y0)], [0, 0, 1]]``; rays are cast
through the crop's pixel centres, so nothing is resampled and labels stay exact. Pixel ``(row i, column j)``
covers ``u ∈ [j, j + 1)``, ``v ∈ [i, i + 1)``; its ray goes through ``(j + ½, i + ½)``. The 2D labels are the 3D
joints projected with ``K_crop`` (the same function the losses use), to float32 rounding.

Depth, as a structured-light / ToF sensor returns it: the first surface along each ray (its ``z``, mm, since a
ray through ``(u, v)`` is ``z · ((u - cx)/fx, (v - cy)/fy, 1)``), Gaussian noise growing with depth², rounded to
1 mm, **0 = no return** at grazing angles, randomly along depth edges, and beyond ``max_range_mm``. A background
plane (wall or table) and, with probability ``occluder_prob``, a sphere held near the hand (an object) are
rendered too. A joint is **visible** when the noise-free surface at its pixel is the hand, no more than
:func:`surface_tolerance_mm` in front of the joint (not hidden by another finger or the object).

RGB: a skin tone (light … dark; the palm side lighter with ``palm_tone``), Lambertian shading under a random
light, a textured and cluttered background (gratings and rectangles in random colours), pixel noise, and colour
jitter (brightness, contrast, per-channel gain); floats in ``[0, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from trainwell.tasks.hand_pose import skeleton as S
from trainwell.tasks.hand_pose.surface import hand_capsules, hand_vertices
from trainwell.tasks.hand_pose.synthetic import (
    Split,
    SyntheticHandsConfig,
    generate_hands,
    project_to_pixels,
    sample_keys,
    splitmix64,
)

_RENDER_SALT = np.uint64(0x5EED_0F_DE97)
"""Mixed into the sample key so the rendering's stream differs from the hand generator's."""
SKIN_TONES = ((0.96, 0.80, 0.69), (0.55, 0.36, 0.24))
"""RGB of the lightest and darkest skin tone; a hand's tone is a random mix of the two."""
PALM_TONE = (0.93, 0.72, 0.66)
"""The pinkish tone the palm side blends towards (palms and finger pads carry little melanin)."""


@dataclass
class RenderConfig:
    """How RGB-D crops are rendered (the RGB-D task's ``data:`` section holds these keys)."""

    crop_size_px: int = 64
    """Side of the square crop, pixels."""
    crop_margin: float = 1.25
    """The crop's side is this × the larger extent of the projected joints (plus the capsules' radius)."""
    depth_noise_mm: float = 1.5
    """Standard deviation of the depth noise at 500 mm; it grows with depth² (structured-light sensors)."""
    grazing_cos: float = 0.2
    """No return where the surface normal is more than ``acos(grazing_cos)`` from the viewing ray."""
    edge_dropout: float = 0.5
    """Probability of no return at a pixel across a depth edge of more than 20 mm."""
    max_range_mm: float = 1500.0
    """No return beyond this depth."""
    background_offset_mm: list[float] = field(default_factory=lambda: [80.0, 400.0])
    """``[min, max]`` distance of the background plane behind the wrist, mm."""
    occluder_prob: float = 0.3
    """Probability that a sphere (an object) sits between the camera and part of the hand."""
    forearm: bool = True
    """Render the forearm behind the wrist."""
    color_jitter: float = 0.2
    """Brightness / contrast / per-channel gain jitter, as a fraction (0 = none)."""
    rgb_noise: float = 0.02
    """Standard deviation of the per-pixel RGB noise (image in [0, 1])."""
    palm_tone: float = 0.0
    """How far the palm side's colour blends from the hand's skin tone towards :data:`PALM_TONE` (0 = one tone
    for the whole hand; per hand, uniform in ``[½, 1] ×`` this). Real palms are lighter than the back of the
    hand; without that cue an open hand seen from the palm and from the back differ only in shape, and the
    thumb's side (hence every finger's name) is a guess."""

    def __post_init__(self) -> None:
        if self.crop_size_px < 8:
            raise ValueError(f"data.crop_size_px must be at least 8; got {self.crop_size_px}.")


MAX_RADIUS_MM = 12.0
"""The thickest capsule around a joint at hand scale 1 (wrist → thumb CMC)."""


def depth_noise_std_mm(depth_mm: torch.Tensor, cfg: RenderConfig) -> torch.Tensor:
    """Standard deviation of the depth noise at ``depth_mm`` (``depth_noise_mm`` at 500 mm, growing with depth²)."""
    return cfg.depth_noise_mm * (depth_mm / 500.0) ** 2


def surface_tolerance_mm(joint_depth_mm: torch.Tensor, hand_scale: torch.Tensor, cfg: RenderConfig) -> torch.Tensor:
    """How far in front of a visible joint ``(B, J)`` the sensor's depth at its pixel may be, mm ``(B, J)``.

    The surface over a joint is its capsule's front, up to one (thickest) radius in front of it; the sensor adds
    noise (4 σ at that depth) and rounds to 1 mm.
    """
    return MAX_RADIUS_MM * hand_scale[:, None] + 4.0 * depth_noise_std_mm(joint_depth_mm, cfg) + 1.0


def crop_intrinsics(joints_cam_mm: torch.Tensor, intrinsics: torch.Tensor, cfg: RenderConfig) -> torch.Tensor:
    """``(B, 3, 3)`` intrinsics of a square crop centred on the projected joints ``(B, 21, 3)`` (see module doc)."""
    px = project_to_pixels(joints_cam_mm, intrinsics)  # (B, 21, 2)
    lo, hi = px.amin(dim=1), px.amax(dim=1)
    centre = (lo + hi) / 2
    radius_px = 12.0 * intrinsics[:, 0, 0] / joints_cam_mm[..., 2].amin(dim=1)  # thickest capsule, nearest joint
    side = (hi - lo).amax(dim=1) * cfg.crop_margin + 2 * radius_px
    scale = cfg.crop_size_px / side
    k = torch.zeros_like(intrinsics)
    k[:, 0, 0], k[:, 1, 1] = intrinsics[:, 0, 0] * scale, intrinsics[:, 1, 1] * scale
    k[:, 0, 2] = (intrinsics[:, 0, 2] - (centre[:, 0] - side / 2)) * scale
    k[:, 1, 2] = (intrinsics[:, 1, 2] - (centre[:, 1] - side / 2)) * scale
    k[:, 2, 2] = 1.0
    return k


def pixel_rays(intrinsics: torch.Tensor, size_px: int) -> torch.Tensor:
    """``(B, H·W, 3)`` ray directions through the pixel centres, scaled so that ``z = 1`` (row-major pixels)."""
    centres = torch.arange(size_px, dtype=intrinsics.dtype) + 0.5
    v, u = torch.meshgrid(centres, centres, indexing="ij")
    u, v = u.reshape(1, -1), v.reshape(1, -1)
    x = (u - intrinsics[:, 0, 2, None]) / intrinsics[:, 0, 0, None]
    y = (v - intrinsics[:, 1, 2, None]) / intrinsics[:, 1, 1, None]
    return torch.stack((x, y, torch.ones_like(x)), dim=-1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def _sphere_hit(rays: torch.Tensor, dd: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Ray parameter of the first hit of spheres ``(B, 1, C, 3)`` by rays ``(B, P, 1, 3)``; ``inf`` for a miss."""
    dc = _dot(rays, centre)
    disc = dc * dc - dd * (_dot(centre, centre) - radius * radius)
    t = (dc - torch.sqrt(disc.clamp_min(0.0))) / dd
    return torch.where((disc >= 0) & (t > 0), t, torch.full_like(t, math.inf))


def cast_capsules(
    rays: torch.Tensor, start: torch.Tensor, end: torch.Tensor, radius: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First hit of each ray with a union of capsules (camera at the origin).

    Args:
        rays: ``(B, P, 3)`` directions with ``z = 1`` (so the ray parameter is the depth).
        start, end: ``(B, C, 3)`` capsule axis end points, camera frame, mm.
        radius: ``(B, C)`` radii, mm.

    Returns:
        ``depth (B, P)`` mm (``inf`` for a miss), ``capsule (B, P)`` index of the surface hit, and the unit outward
        ``normal (B, P, 3)`` there. The union's first hit is the minimum over the parts (cylinder body, two caps).
    """
    d = rays[:, :, None, :]
    a, b, r = start[:, None], end[:, None], radius[:, None]
    dd = _dot(d, d)
    ba = b - a
    baba = _dot(ba, ba).clamp_min(1e-9)
    dba, da, aba = _dot(d, ba), _dot(d, a), _dot(a, ba)
    # |t d - a|² - ((t d - a)·ba)² / |ba|² = r²  →  qa t² - 2 qb t + qc = 0
    qa = (dd - dba * dba / baba).clamp_min(1e-12)
    qb = da - dba * aba / baba
    qc = _dot(a, a) - aba * aba / baba - r * r
    disc = qb * qb - qa * qc
    t_body = (qb - torch.sqrt(disc.clamp_min(0.0))) / qa
    s = (t_body * dba - aba) / baba
    body = (disc >= 0) & (s >= 0) & (s <= 1) & (t_body > 0)
    t_body = torch.where(body, t_body, torch.full_like(t_body, math.inf))
    t = torch.minimum(t_body, torch.minimum(_sphere_hit(d, dd, a, r), _sphere_hit(d, dd, b, r)))
    depth, capsule = t.min(dim=-1)  # (B, P)
    pick = capsule[..., None, None].expand(-1, -1, 1, 3)
    a_hit = torch.gather(start[:, None].expand(-1, rays.shape[1], -1, -1), 2, pick)[:, :, 0]
    ba_hit = torch.gather((end - start)[:, None].expand(-1, rays.shape[1], -1, -1), 2, pick)[:, :, 0]
    point = rays * torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth))[..., None]
    along = (_dot(point - a_hit, ba_hit) / _dot(ba_hit, ba_hit).clamp_min(1e-9)).clamp(0.0, 1.0)
    normal = S.normalize(point - a_hit - along[..., None] * ba_hit)
    return depth, capsule, normal


def render_keys(seed: int, split: Split, indices: np.ndarray) -> list[int]:
    """The rendering seed of each sample: a hash of its ``(seed, split, index)`` key and a salt."""
    return [int(k) for k in splitmix64(sample_keys(seed, split, indices) ^ _RENDER_SALT) >> np.uint64(1)]


def _uniform(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g)


_NUM_SCALARS = 32
"""Per-sample scalar draws (see :func:`_sample_scene`); append, never reorder (it would change every crop)."""


def _sample_scene(keys: list[int], size: int) -> dict[str, torch.Tensor]:
    """Every random number of the rendering, per sample from its own generator, stacked ``(B, ...)``."""
    scalars, depth_noise, edge_u, rgb_noise, texture = [], [], [], [], []
    for key in keys:
        g = torch.Generator().manual_seed(key)
        scalars.append(_uniform(g, _NUM_SCALARS))
        texture.append(_uniform(g, 40))
        depth_noise.append(torch.randn(size * size, generator=g))
        edge_u.append(_uniform(g, size * size))
        rgb_noise.append(torch.randn(3, size, size, generator=g))
    return {
        "u": torch.stack(scalars),
        "texture": torch.stack(texture),
        "depth_noise": torch.stack(depth_noise),
        "edge_u": torch.stack(edge_u),
        "rgb_noise": torch.stack(rgb_noise),
    }


def _occluder(joints_cam_mm: torch.Tensor, u: torch.Tensor, cfg: RenderConfig, scale: torch.Tensor):
    """A sphere ``(B, 1, 3)``, radius ``(B, 1)`` in front of a random joint (or behind the camera: absent)."""
    joint = (u[:, 8] * S.NUM_JOINTS).long().clamp_max(S.NUM_JOINTS - 1)
    target = joints_cam_mm[torch.arange(joints_cam_mm.shape[0]), joint]  # (B, 3)
    towards_camera = 25.0 + 40.0 * u[:, 9]
    lateral = torch.stack((u[:, 10] - 0.5, u[:, 11] - 0.5, torch.zeros_like(u[:, 10])), -1) * 40.0
    centre = target * (1.0 - towards_camera / target.norm(dim=-1))[:, None] + lateral
    present = u[:, 7] < cfg.occluder_prob
    centre = torch.where(present[:, None], centre, torch.tensor([0.0, 0.0, -1000.0]))
    radius = (14.0 + 16.0 * u[:, 12]) * scale
    return centre[:, None], radius[:, None]


def _background_plane(rays: torch.Tensor, root_z: torch.Tensor, u: torch.Tensor, cfg: RenderConfig):
    """Depth ``(B, P)`` of a tilted plane behind the hand, and its cosine to the rays ``(B, P)``."""
    lo, hi = cfg.background_offset_mm
    normal = S.normalize(torch.stack((0.6 * (u[:, 4] - 0.5), 0.6 * (u[:, 5] - 0.5), -torch.ones_like(u[:, 4])), -1))
    point_z = root_z + lo + (hi - lo) * u[:, 6]
    n_dot_p = normal[:, 2] * point_z  # the plane passes through (0, 0, point_z)
    n_dot_d = _dot(rays, normal[:, None])
    depth = n_dot_p[:, None] / n_dot_d
    cos = n_dot_d.abs() / torch.sqrt(_dot(rays, rays))
    return torch.where(depth > 0, depth, torch.full_like(depth, math.inf)), cos


def _texture(tex: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, 3, H, W)`` background: three coloured gratings and four flat rectangles (clutter), in [0, 1]."""
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    v, u = torch.meshgrid(grid, grid, indexing="ij")
    image = torch.zeros(tex.shape[0], 3, size, size)
    for k in range(3):
        p = tex[:, 8 * k : 8 * k + 8]
        angle, freq, phase = p[:, 0] * math.pi, 1.0 + 7.0 * p[:, 1], p[:, 2] * 2 * math.pi
        wave = torch.sin(
            2
            * math.pi
            * freq[:, None, None]
            * (u * torch.cos(angle)[:, None, None] + v * torch.sin(angle)[:, None, None])
            + phase[:, None, None]
        )
        image = image + (0.5 + 0.5 * wave)[:, None] * p[:, 3:6, None, None] / 3.0
    for k in range(4):
        p = tex[:, 24 + 4 * k : 28 + 4 * k]
        x0, y0 = p[:, 0] * 0.8, p[:, 1] * 0.8
        inside = (u >= x0[:, None, None]) & (u < x0[:, None, None] + 0.1 + 0.3 * p[:, 2, None, None])
        inside = inside & (v >= y0[:, None, None]) & (v < y0[:, None, None] + 0.1 + 0.3 * p[:, 3, None, None])
        colour = torch.stack((p[:, 2], p[:, 3], (p[:, 0] + p[:, 1]) / 2), -1)
        image = torch.where(inside[:, None], colour[:, :, None, None], image)
    return image.clamp(0.0, 1.0)


def _drop_depth_edges(depth: torch.Tensor, edge_u: torch.Tensor, cfg: RenderConfig) -> torch.Tensor:
    """Bool ``(B, H, W)``: pixels across a > 20 mm depth step that lose their return (with ``edge_dropout``)."""
    padded = torch.nn.functional.pad(depth[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    centre = padded[:, 1:-1, 1:-1]
    step = torch.stack(
        [
            (centre - padded[:, 1:-1, :-2]).abs(),
            (centre - padded[:, 1:-1, 2:]).abs(),
            (centre - padded[:, :-2, 1:-1]).abs(),
            (centre - padded[:, 2:, 1:-1]).abs(),
        ]
    ).amax(dim=0)
    return (step > 20.0) & (edge_u.view_as(depth) < cfg.edge_dropout)


class _Hits(NamedTuple):
    """What the ray through each crop pixel meets first, ``(B, P)`` unless noted."""

    clean: torch.Tensor
    """Noise-free depth, mm; ``inf`` where the ray meets nothing."""
    on_body: torch.Tensor
    """The hand or the object is in front of the background plane."""
    is_hand: torch.Tensor
    """The nearest capsule is the hand's (not the object); says nothing of the plane (see ``on_body``)."""
    normal: torch.Tensor
    """``(B, P, 3)`` unit outward normal of the nearest capsule."""
    plane_cos: torch.Tensor
    """Cosine between the background plane's normal and the ray."""


def _cast_scene(rays: torch.Tensor, hands: dict[str, torch.Tensor], u: torch.Tensor, cfg: RenderConfig) -> _Hits:
    """Ray-cast the hand's capsules, the object and the background plane; both depth and RGB read the result.

    The object is cast as one more (zero-length) capsule after the hand's, so a capsule index below the hand's
    count means the hand.
    """
    joints, scale = hands["joints_cam_mm"], hands["hand_scale"]
    start, end, radius = hand_capsules(joints, scale, forearm=cfg.forearm)
    num_hand = start.shape[1]
    occ_centre, occ_radius = _occluder(joints, u, cfg, scale)
    start, end = torch.cat((start, occ_centre), 1), torch.cat((end, occ_centre), 1)
    hand_depth, capsule, normal = cast_capsules(rays, start, end, torch.cat((radius, occ_radius), 1))
    plane_depth, plane_cos = _background_plane(rays, hands["root_cam_mm"][:, 2], u, cfg)
    on_body = hand_depth <= plane_depth
    clean = torch.where(on_body, hand_depth, plane_depth)  # (B, P), inf where nothing is hit
    return _Hits(clean, on_body, capsule < num_hand, normal, plane_cos)


def _sensor_depth(hits: _Hits, rays: torch.Tensor, rnd: dict[str, torch.Tensor], cfg: RenderConfig) -> torch.Tensor:
    """``(B, 1, S, S)`` depth as a sensor returns it: grazing-angle and edge dropouts, range, noise growing with
    depth², 1 mm quantisation; 0 = no return (a real sensor's holes, which the model has to cope with)."""
    n, size = rays.shape[0], cfg.crop_size_px
    view_cos = -_dot(hits.normal, rays) / torch.sqrt(_dot(rays, rays))
    cos = torch.where(hits.on_body, view_cos, hits.plane_cos)
    finite = torch.where(torch.isfinite(hits.clean), hits.clean, torch.full_like(hits.clean, cfg.max_range_mm * 2))
    returns = (cos > cfg.grazing_cos) & (finite < cfg.max_range_mm)
    returns = returns & ~_drop_depth_edges(finite.view(n, size, size), rnd["edge_u"], cfg).view(n, -1)
    noisy = torch.round(finite + depth_noise_std_mm(finite, cfg) * rnd["depth_noise"])
    return torch.where(returns, noisy, torch.zeros_like(noisy)).view(n, 1, size, size)


def _albedo(hits: _Hits, joints_cam_mm: torch.Tensor, u: torch.Tensor, cfg: RenderConfig) -> torch.Tensor:
    """``(B, P, 3)`` surface colour before lighting: the hand's skin tone (lighter towards the palm side with
    ``palm_tone``, the cue that tells the palm from the back) or the object's colour."""
    skin = torch.tensor(SKIN_TONES[0]) + u[:, 0:1] * (torch.tensor(SKIN_TONES[1]) - torch.tensor(SKIN_TONES[0]))
    object_colour = u[:, 13:16]
    skin_px = skin[:, None].expand(-1, hits.normal.shape[1], -1)  # (B, P, 3)
    if cfg.palm_tone:
        palmar = -_dot(hits.normal, S.palm_frame(joints_cam_mm)[..., 2][:, None])  # > 0 on the palm side
        blend = (cfg.palm_tone * (0.5 + 0.5 * u[:, 21]))[:, None] * (0.5 + 2.0 * palmar).clamp(0.0, 1.0)
        skin_px = skin_px + blend[..., None] * (torch.tensor(PALM_TONE) - skin_px)
    return torch.where(hits.is_hand[..., None], skin_px, object_colour[:, None])


def _shade(hits: _Hits, albedo: torch.Tensor, rnd: dict[str, torch.Tensor], cfg: RenderConfig) -> torch.Tensor:
    """``(B, 3, S, S)`` RGB of the scene: the albedo under a random Lambertian light with ambient, in front of the
    textured background (darker where the plane turns away)."""
    u = rnd["u"]
    n, size = u.shape[0], cfg.crop_size_px
    light = S.normalize(torch.stack((u[:, 1] - 0.5, u[:, 2] - 0.5, -torch.ones_like(u[:, 1])), -1))
    ambient = 0.25 + 0.25 * u[:, 3]
    lambert = ambient[:, None] + (1 - ambient[:, None]) * _dot(hits.normal, light[:, None]).clamp_min(0.0)
    body_rgb = (albedo * lambert[..., None]).transpose(1, 2).reshape(n, 3, size, size)
    background = _texture(rnd["texture"], size) * (0.6 + 0.4 * hits.plane_cos.view(n, 1, size, size))
    return torch.where(hits.on_body.view(n, 1, size, size), body_rgb, background)


def _camera_response(rgb: torch.Tensor, rnd: dict[str, torch.Tensor], cfg: RenderConfig) -> torch.Tensor:
    """Colour jitter (contrast about the image mean, brightness, per-channel gain) and pixel noise, clamped to
    [0, 1]: what differs between cameras and exposures, so the model cannot key on exact colours."""
    u, jitter = rnd["u"], cfg.color_jitter
    gains = 1.0 + jitter * (2 * u[:, 16:19] - 1)
    brightness, contrast = 1.0 + jitter * (2 * u[:, 19] - 1), 1.0 + jitter * (2 * u[:, 20] - 1)
    mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
    rgb = ((rgb - mean) * contrast[:, None, None, None] + mean) * brightness[:, None, None, None]
    return (rgb * gains[:, :, None, None] + cfg.rgb_noise * rnd["rgb_noise"]).clamp(0.0, 1.0)


def _keypoint_labels(
    joints_cam_mm: torch.Tensor, k_crop: torch.Tensor, hits: _Hits, scale: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints ``(B, 21, 2)`` crop px (the joints projected with the crop's intrinsics, as the losses project)
    and visibility ``(B, 21)`` float: inside the crop, and the noise-free surface at the joint's pixel is the
    hand's own, at most the thickest capsule's radius (+ 1 mm) in front of the joint."""
    keypoints = project_to_pixels(joints_cam_mm, k_crop)
    col, row = keypoints[..., 0].floor().long(), keypoints[..., 1].floor().long()
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    pixel = row.clamp(0, size - 1) * size + col.clamp(0, size - 1)  # (B, 21)
    surface = torch.gather(hits.clean, 1, pixel)
    own = torch.gather(hits.on_body & hits.is_hand, 1, pixel)
    near = surface >= joints_cam_mm[..., 2] - MAX_RADIUS_MM * scale[:, None] - 1.0
    return keypoints, (inside & own & near).float()


def render_rgbd(
    hands_cfg: SyntheticHandsConfig, cfg: RenderConfig, seed: int, split: Split, indices: np.ndarray
) -> dict[str, torch.Tensor]:
    """Render the samples ``indices`` of ``split`` (any order; each a pure function of ``(seed, split, index)``).

    Returns float32 tensors, ``B`` first (``S = crop_size_px``, ``V`` = :data:`surface.NUM_VERTICES`):

    * ``rgb`` ``(B, 3, S, S)`` in [0, 1]; ``depth_mm`` ``(B, 1, S, S)`` millimetres, 0 = no return;
    * ``keypoints_2d_px`` ``(B, 21, 2)`` crop pixels (the projection of ``joints_cam_mm`` with ``intrinsics``,
      for every joint); ``visibility`` ``(B, 21)`` (inside the crop and not hidden, see the module doc);
    * ``intrinsics`` ``(B, 3, 3)`` of the crop; ``joints_cam_mm``, ``joints_rel_mm`` ``(B, 21, 3)``;
      ``root_cam_mm`` ``(B, 3)``; ``vertices_rel_mm`` ``(B, V, 3)`` root-relative; ``hand_scale`` ``(B,)``.
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    hands = generate_hands(hands_cfg, seed, split, indices)
    joints, scale = hands["joints_cam_mm"], hands["hand_scale"]
    k_crop = crop_intrinsics(joints, hands["intrinsics"], cfg)
    rnd = _sample_scene(render_keys(seed, split, indices), cfg.crop_size_px)
    rays = pixel_rays(k_crop, cfg.crop_size_px)  # (B, P, 3)
    hits = _cast_scene(rays, hands, rnd["u"], cfg)
    depth_mm = _sensor_depth(hits, rays, rnd, cfg)
    rgb = _camera_response(_shade(hits, _albedo(hits, joints, rnd["u"], cfg), rnd, cfg), rnd, cfg)
    keypoints, visibility = _keypoint_labels(joints, k_crop, hits, scale, cfg.crop_size_px)
    return {
        "rgb": rgb.float(),
        "depth_mm": depth_mm.float(),
        "keypoints_2d_px": keypoints,
        "visibility": visibility,
        "intrinsics": k_crop,
        "joints_cam_mm": joints,
        "joints_rel_mm": hands["joints_rel_mm"],
        "root_cam_mm": hands["root_cam_mm"],
        "vertices_rel_mm": hand_vertices(hands["joints_rel_mm"], scale),
        "hand_scale": scale,
    }
