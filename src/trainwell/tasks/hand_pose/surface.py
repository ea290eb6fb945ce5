"""A hand surface built on the 21-joint skeleton: capsules along the bones, a palm slab, and a skinned vertex set.

MANO cannot be shipped, so the synthetic hand's surface is a union of *capsules* (a segment swept by a sphere):

* one per finger bone (thumb CMC→MCP→IP→tip, index…pinky MCP→PIP→DIP→tip), radius tapering towards the tip;
* the **palm slab**: a fan of parallel capsules from points on a wrist line to points on the MCP line (index →
  pinky), a capsule across the MCPs, one along the wrist, the wrist → thumb CMC bone and the thumb web
  (thumb CMC → index MCP) — together a rounded slab about 20 mm thick;
* optionally the forearm (a thick capsule behind the wrist; not part of the mesh).

The pack's **mesh** is a fixed-topology vertex set rigidly skinned to these capsules: rings of
:data:`RING_POINTS` vertices at :data:`RING_POSITIONS` along each mesh capsule, each ring in a frame fixed by
the bone direction and the palm's dorsal axis (no twist ambiguity), plus the five fingertips. Vertex ``k`` is
always the same point of the same bone, so a vertex loss and a mesh error are meaningful, like MANO's 778.

All functions are element-wise over the batch (no matmul), so a hand's surface does not depend on its batch.
"""

from __future__ import annotations

import math

import torch

from trainwell.tasks.hand_pose import skeleton as S

FINGER_RADII_MM: tuple[tuple[float, float, float], ...] = (
    (11.0, 9.5, 8.5),  # thumb: CMC→MCP, MCP→IP, IP→tip
    (8.8, 8.0, 7.2),  # index: proximal, middle, distal phalanx
    (9.0, 8.2, 7.4),
    (8.5, 7.8, 7.0),
    (7.6, 7.0, 6.4),
)
"""Capsule radius of each finger bone at hand scale 1, millimetres (a hand's finger is 14–18 mm thick)."""
PALM_RADIUS_MM = 10.5
"""Radius of the palm fan's capsules: the palm slab is about 21 mm thick."""
PALM_FAN = 5
"""Capsules in the palm fan, from the index side to the pinky side."""
FOREARM_RADIUS_MM = 24.0
FOREARM_LENGTH_MM = 90.0
RING_POSITIONS: tuple[float, ...] = (1 / 6, 1 / 2, 5 / 6)
"""Fractions along a mesh capsule's axis where its vertex rings sit."""
RING_POINTS = 6
"""Vertices per ring (every 60° around the bone)."""

# Capsule order: 15 finger bones, then the palm parts, then (optionally) the forearm.
_FINGER_BONES: list[tuple[int, int]] = [(c[k], c[k + 1]) for c in S.FINGER_JOINTS for k in range(3)]
NUM_FINGER_CAPSULES = len(_FINGER_BONES)
NUM_PALM_CAPSULES = PALM_FAN + 4  # fan, across the MCPs, wrist line, wrist→thumb CMC, thumb web
NUM_MESH_CAPSULES = NUM_FINGER_CAPSULES + PALM_FAN + 1  # fingers, fan, wrist→thumb CMC carry vertex rings
NUM_VERTICES = NUM_MESH_CAPSULES * len(RING_POSITIONS) * RING_POINTS + 5
"""Vertices of the pack's hand mesh (rings on 21 capsules + 5 fingertips)."""
FINGERTIPS = (4, 8, 12, 16, 20)


def _lerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    return a + (b - a) * w


def hand_capsules(
    joints_mm: torch.Tensor, hand_scale: torch.Tensor, *, forearm: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The capsules of each hand: ``(start (B, C, 3), end (B, C, 3), radius (B, C))`` in the joints' frame, mm.

    Args:
        joints_mm: ``(B, 21, 3)`` joints (any frame), millimetres.
        hand_scale: ``(B,)`` per-hand scale (radii scale with it).
        forearm: append the forearm capsule (last).
    """
    wrist = joints_mm[:, S.ROOT]
    index_mcp, pinky_mcp, middle_mcp = joints_mm[:, 5], joints_mm[:, 17], joints_mm[:, 9]
    across = index_mcp - pinky_mcp  # radial direction, palm width
    starts, ends, radii = [], [], []
    for (a, b), r in zip(_FINGER_BONES, [r for f in FINGER_RADII_MM for r in f], strict=True):
        starts.append(joints_mm[:, a])
        ends.append(joints_mm[:, b])
        radii.append(r)
    for k in range(PALM_FAN):  # the fan: wrist line (narrower than the knuckles) → MCP line
        w = k / (PALM_FAN - 1)
        starts.append(wrist + across * (0.3 - 0.6 * w))
        ends.append(_lerp(index_mcp, pinky_mcp, w))
        radii.append(PALM_RADIUS_MM)
    starts += [index_mcp, wrist + across * 0.3, wrist, joints_mm[:, 1]]
    ends += [pinky_mcp, wrist - across * 0.3, joints_mm[:, 1], index_mcp]
    radii += [PALM_RADIUS_MM * 0.9, PALM_RADIUS_MM, 12.0, 8.0]
    if forearm:
        back = S.normalize(wrist - middle_mcp)
        starts.append(wrist + back * 10.0)
        ends.append(wrist + back * FOREARM_LENGTH_MM)
        radii.append(FOREARM_RADIUS_MM)
    start, end = torch.stack(starts, dim=1), torch.stack(ends, dim=1)
    radius = torch.tensor(radii, dtype=joints_mm.dtype) * hand_scale[:, None].to(joints_mm.dtype)
    return start, end, radius


def _mesh_capsule_ids() -> list[int]:
    return [*list(range(NUM_FINGER_CAPSULES + PALM_FAN)), NUM_FINGER_CAPSULES + PALM_FAN + 2]


def hand_vertices(joints_mm: torch.Tensor, hand_scale: torch.Tensor) -> torch.Tensor:
    """``(B, NUM_VERTICES, 3)`` mesh vertices on the capsule surfaces, same frame and unit as ``joints_mm``.

    Vertex order: capsule by capsule (finger bones thumb…pinky base→tip, palm fan index→pinky, wrist→thumb CMC),
    ring by ring along the axis, ring point by ring point (angle ``2πk / RING_POINTS`` from the dorsal side);
    then the five fingertips' tip points (the tip joint pushed out by the radius along the last bone).
    """
    start, end, radius = hand_capsules(joints_mm, hand_scale, forearm=False)
    ids = _mesh_capsule_ids()
    start, end, radius = start[:, ids], end[:, ids], radius[:, ids]
    axis = S.normalize(end - start)  # (B, C, 3)
    dorsal = S.palm_frame(joints_mm)[..., 2].unsqueeze(1).expand_as(axis)
    e1 = S.orthogonal_part(dorsal, axis)
    e2 = S.cross(axis, e1)
    rings = []
    for s in RING_POSITIONS:
        centre = _lerp(start, end, s)
        for k in range(RING_POINTS):
            angle = 2.0 * math.pi * k / RING_POINTS
            rings.append(centre + radius[..., None] * (math.cos(angle) * e1 + math.sin(angle) * e2))
    ring_vertices = torch.stack(rings, dim=2).flatten(1, 2)  # (B, C * R * P, 3), capsule-major
    tip_bones = [3 * f + 2 for f in range(5)]
    tips = end[:, tip_bones] + radius[:, tip_bones, None] * axis[:, tip_bones]
    return torch.cat((ring_vertices, tips), dim=1)
