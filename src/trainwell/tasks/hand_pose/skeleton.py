"""The 21-joint hand skeleton (FreiHAND / OpenPose order), its proportions, joint limits and angles.

Joint order: 0 wrist; 1–4 thumb (CMC, MCP, IP, tip); 5–8 index, 9–12 middle, 13–16 ring, 17–20 pinky
(MCP, PIP, DIP, tip), each finger from base to tip. Lengths are in millimetres, angles in radians
(limits are written in degrees and converted once).

Joint angles are defined on 3D joint positions alone, so that the synthetic generator (which builds
hands *from* angles) and the pose prior (which reads angles *from* predicted joints) share one
definition:

* **Palm frame** from the wrist, the middle MCP and the index/pinky MCPs: ``x`` distal (wrist → middle
  MCP), ``z`` dorsal (back of the hand), ``y = z × x`` radial (towards the thumb) for a right hand.
* **Base frame** of each finger at its first articulated joint: for index…pinky, ``x`` along the
  metacarpal (wrist → MCP) and ``y`` the palm's ``y`` made orthogonal to it; for the thumb, the palm
  frame turned by the fixed rest rotation :data:`THUMB_REST_ROTATION` (the thumb's metacarpal points
  distally, radially and palmarly, and flexes across the palm).
* **Angles of a bone** in its parent frame, with direction components ``(cx, cy, cz)``:
  flexion ``atan2(-cz, cx)`` (towards the palm is positive) and abduction ``asin(cy)`` (sideways).
  A bone direction is ``R_y(flexion) R_z(abduction) x`` in the parent frame.
* **Frame propagation**: the child frame's ``x`` is the bone direction and its ``y`` the parent's
  ``y`` made orthogonal to it (no twist) — exactly the frame ``R_parent R_y(flexion) R_z(abduction)``.

The helpers the generator uses (:func:`base_frames`, :func:`frame_from_xy`, :func:`frame_apply`, …) are
element-wise arithmetic only — no reductions, no matmul — so a hand does not depend on which other hands
share the batch: generation is bit-reproducible per sample. :func:`joint_angles`, the pose prior's hot
path, uses batched reductions instead (the generator never calls it).
"""

from __future__ import annotations

import math

import torch

NUM_JOINTS = 21
ROOT = 0
"""The wrist: root of the kinematic tree and origin of root-relative coordinates."""

FINGERS: tuple[str, ...] = ("thumb", "index", "middle", "ring", "pinky")
FINGER_JOINTS: tuple[tuple[int, int, int, int], ...] = (
    (1, 2, 3, 4),
    (5, 6, 7, 8),
    (9, 10, 11, 12),
    (13, 14, 15, 16),
    (17, 18, 19, 20),
)
"""Joint indices of each finger, base to tip."""
_CHAIN_JOINTS = [joint for chain in FINGER_JOINTS for joint in chain]
_MCP_JOINTS = [chain[0] for chain in FINGER_JOINTS[1:]]

JOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb_cmc",
    "thumb_mcp",
    "thumb_ip",
    "thumb_tip",
    *(f"{finger}_{part}" for finger in FINGERS[1:] for part in ("mcp", "pip", "dip", "tip")),
)

PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)
"""Parent joint of each joint (-1 for the wrist)."""

BONES: tuple[tuple[int, int], ...] = tuple((PARENTS[j], j) for j in range(1, NUM_JOINTS))
"""The 20 bones as ``(parent, child)``; bone ``b`` ends at joint ``b + 1``."""

ARTICULATED_JOINT_NAMES: tuple[tuple[str, str, str], ...] = (
    ("cmc", "mcp", "ip"),
    ("mcp", "pip", "dip"),
    ("mcp", "pip", "dip"),
    ("mcp", "pip", "dip"),
    ("mcp", "pip", "dip"),
)
"""The three articulated joints of each finger; angle arrays are shaped ``(..., 5 fingers, 3 joints)``."""

TEMPLATE_BONE_LENGTHS_MM: tuple[float, ...] = (
    # thumb: wrist→CMC, metacarpal, proximal phalanx, distal phalanx (to the tip)
    29.4, 44.0, 31.0, 26.0,
    # index: metacarpal (wrist→MCP), proximal, middle, distal phalanx (to the tip)
    68.0, 40.0, 24.0, 21.0,
    # middle
    66.0, 45.0, 28.0, 22.0,
    # ring
    61.0, 42.0, 27.0, 22.0,
    # pinky
    57.0, 33.0, 19.0, 20.0,
)  # fmt: skip
"""Bone lengths of an average adult hand in millimetres, in :data:`BONES` order (hand scale 1)."""


def _in_palm_plane(degrees: float) -> tuple[float, float, float]:
    return (math.cos(math.radians(degrees)), math.sin(math.radians(degrees)), 0.0)


PALM_DIRECTIONS: tuple[tuple[float, float, float], ...] = (
    (20.0 / math.sqrt(864.0), 20.0 / math.sqrt(864.0), -8.0 / math.sqrt(864.0)),  # thumb CMC: radial, palmar
    _in_palm_plane(16.0),  # index metacarpal
    _in_palm_plane(0.0),  # middle metacarpal: defines the palm's x axis
    _in_palm_plane(-12.0),
    _in_palm_plane(-25.0),
)
"""Unit directions, in the palm frame, of the wrist → (thumb CMC, index…pinky MCP) bones."""


def _rotation_deg(z_deg: float, y_deg: float, x_deg: float) -> tuple[tuple[float, ...], ...]:
    """``R_z @ R_y @ R_x`` as nested tuples (right-handed, angles in degrees)."""
    cz, sz = math.cos(math.radians(z_deg)), math.sin(math.radians(z_deg))
    cy, sy = math.cos(math.radians(y_deg)), math.sin(math.radians(y_deg))
    cx, sx = math.cos(math.radians(x_deg)), math.sin(math.radians(x_deg))
    rz = ((cz, -sz, 0.0), (sz, cz, 0.0), (0.0, 0.0, 1.0))
    ry = ((cy, 0.0, sy), (0.0, 1.0, 0.0), (-sy, 0.0, cy))
    rx = ((1.0, 0.0, 0.0), (0.0, cx, -sx), (0.0, sx, cx))

    def mul(a: tuple[tuple[float, ...], ...], b: tuple[tuple[float, ...], ...]) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)) for i in range(3))

    return mul(mul(rz, ry), rx)


THUMB_REST_ROTATION = _rotation_deg(40.0, 15.0, -60.0)
"""Thumb base frame in the palm frame: 40° radial, 15° palmar, rolled 60° so that thumb flexion moves
the tip across the palm towards the little finger."""

# Limits in degrees, (lo, hi), shaped [finger][joint]; hinge joints (PIP, DIP, thumb IP) have no abduction.
FLEXION_LIMITS_DEG: tuple[tuple[tuple[float, float], ...], ...] = (
    ((-20.0, 45.0), (-10.0, 55.0), (-15.0, 80.0)),  # thumb CMC, MCP, IP
    ((-20.0, 90.0), (0.0, 110.0), (0.0, 80.0)),  # index MCP, PIP, DIP
    ((-20.0, 90.0), (0.0, 110.0), (0.0, 80.0)),
    ((-20.0, 90.0), (0.0, 110.0), (0.0, 80.0)),
    ((-20.0, 90.0), (0.0, 110.0), (0.0, 80.0)),
)
"""Flexion range of every articulated joint (positive = towards the palm), degrees."""
ABDUCTION_LIMITS_DEG: tuple[tuple[tuple[float, float], ...], ...] = (
    ((-25.0, 25.0), (-8.0, 8.0), (0.0, 0.0)),
    ((-20.0, 20.0), (0.0, 0.0), (0.0, 0.0)),
    ((-15.0, 15.0), (0.0, 0.0), (0.0, 0.0)),
    ((-15.0, 15.0), (0.0, 0.0), (0.0, 0.0)),
    ((-20.0, 20.0), (0.0, 0.0), (0.0, 0.0)),
)
"""Abduction (sideways) range of every articulated joint, degrees; (0, 0) for hinge joints."""
DIP_PIP_RATIO = 2.0 / 3.0
"""Natural coupling of the fingers: DIP flexion ≈ 2/3 of PIP flexion."""
DIP_COUPLING_TOLERANCE_DEG = 5.0
"""Largest deviation of DIP flexion from ``DIP_PIP_RATIO × PIP`` that the generator produces, degrees."""


def angle_limits_rad(dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """``(2, 5, 3, 2)`` limits in radians: ``[flexion|abduction, finger, joint, lo|hi]``."""
    limits = torch.tensor([FLEXION_LIMITS_DEG, ABDUCTION_LIMITS_DEG], dtype=torch.float64)
    return torch.deg2rad(limits).to(dtype=dtype, device=device)


def template_bone_lengths_mm(dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """``(20,)`` template bone lengths in millimetres (:data:`BONES` order)."""
    return torch.tensor(TEMPLATE_BONE_LENGTHS_MM, dtype=dtype, device=device)


# -- element-wise vector helpers (last dimension = xyz) ----------------------------------------------
def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dot product over the last dimension (size 3), written out so it is batch-independent."""
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross product over the last dimension (size 3)."""
    return torch.stack(
        (
            a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
            a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
            a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0],
        ),
        dim=-1,
    )


def normalize(v: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Unit vectors along the last dimension; (near-)zero vectors stay finite (divided by ``eps``)."""
    # Clamp before the square root: sqrt's gradient at 0 is infinite (NaN after the clamp's zero).
    return v / torch.sqrt(dot(v, v).clamp_min(eps * eps)).unsqueeze(-1)


def orthogonal_part(v: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """``v`` minus its component along the unit vector ``unit``, normalised."""
    return normalize(v - dot(v, unit).unsqueeze(-1) * unit)


def frame_apply(frame: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """``frame @ local`` for frames ``(..., 3, 3)`` (columns = axes) and vectors ``(..., 3)``."""
    return frame[..., 0] * local[..., 0:1] + frame[..., 1] * local[..., 1:2] + frame[..., 2] * local[..., 2:3]


def frame_from_xy(x: torch.Tensor, y_hint: torch.Tensor) -> torch.Tensor:
    """Right-handed frame ``(..., 3, 3)`` (columns x, y, z) with ``x`` given and ``y`` from ``y_hint``."""
    y = orthogonal_part(y_hint, x)
    return torch.stack((x, y, cross(x, y)), dim=-1)


# -- frames and angles -------------------------------------------------------------------------------
def palm_frame(joints: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` palm frame (columns: distal, radial, dorsal) from joints ``(..., 21, 3)``."""
    wrist = joints[..., ROOT, :]
    x = normalize(joints[..., 9, :] - wrist)
    dorsal = cross(joints[..., 17, :] - wrist, joints[..., 5, :] - wrist)
    z = orthogonal_part(dorsal, x)
    return torch.stack((x, cross(z, x), z), dim=-1)


def base_frames(joints: torch.Tensor) -> torch.Tensor:
    """``(..., 5, 3, 3)`` frame of each finger at its first articulated joint (thumb CMC, finger MCPs).

    Reads only the wrist, thumb CMC and the four MCPs of ``joints`` ``(..., 21, 3)``.
    """
    palm = palm_frame(joints)
    rest = torch.tensor(THUMB_REST_ROTATION, dtype=joints.dtype, device=joints.device)
    # palm @ rest, column by column with frame_apply (element-wise, batch-independent).
    thumb = torch.stack([frame_apply(palm, rest[:, k].expand_as(palm[..., 0])) for k in range(3)], dim=-1)
    metacarpals = normalize(joints[..., _MCP_JOINTS, :] - joints[..., ROOT : ROOT + 1, :])  # (..., 4, 3)
    fingers = frame_from_xy(metacarpals, palm[..., 1].unsqueeze(-2))
    return torch.cat((thumb.unsqueeze(-3), fingers), dim=-3)


def direction_from_angles(cos_f: torch.Tensor, sin_f: torch.Tensor, cos_a: torch.Tensor, sin_a: torch.Tensor):
    """Local bone direction ``R_y(f) R_z(a) x = (cos f cos a, sin a, -sin f cos a)`` as ``(..., 3)``."""
    return torch.stack((cos_f * cos_a, sin_a, -sin_f * cos_a), dim=-1)


def joint_angles(joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flexion and abduction of the 15 articulated joints, radians, each ``(..., 5, 3)``.

    Args:
        joints: ``(..., 21, 3)`` joint positions (any origin and unit; angles are invariant to both,
            and to a global rotation).
    """
    frames = base_frames(joints)  # (..., 5, 3, 3)
    chains = joints[..., _CHAIN_JOINTS, :].unflatten(-2, (5, 4))  # (..., 5 fingers, 4 joints, 3)
    bones = torch.nn.functional.normalize(chains[..., 1:, :] - chains[..., :-1, :], dim=-1, eps=1e-9)
    components = []  # each bone's direction in its parent's frame, (..., 5, 3)
    # Batched reductions from here on (this is the loss's hot path; the generator does not use it).
    for level in range(3):
        u = bones[..., level, :]
        components.append((frames * u.unsqueeze(-1)).sum(dim=-2))
        y = frames[..., 1]
        y = torch.nn.functional.normalize(y - (y * u).sum(dim=-1, keepdim=True) * u, dim=-1, eps=1e-9)
        frames = torch.stack((u, y, torch.linalg.cross(u, y, dim=-1)), dim=-1)
    c = torch.stack(components, dim=-2)  # (..., 5, 3 joints, 3)
    cx, cy, cz = c[..., 0], c[..., 1], c[..., 2]
    flexion = torch.atan2(-cz, cx)
    abduction = torch.atan2(cy, torch.sqrt((cx * cx + cz * cz).clamp_min(1e-18)))
    return flexion, abduction


def bone_lengths(joints: torch.Tensor) -> torch.Tensor:
    """``(..., 20)`` bone lengths (same unit as ``joints`` ``(..., 21, 3)``), :data:`BONES` order."""
    parents = torch.tensor([p for p, _ in BONES], device=joints.device)
    children = torch.tensor([c for _, c in BONES], device=joints.device)
    vectors = joints[..., children, :] - joints[..., parents, :]
    return torch.sqrt(dot(vectors, vectors).clamp_min(1e-18))  # finite gradient for a zero-length bone


def palm_view_angle_deg(joints_cam: torch.Tensor) -> torch.Tensor:
    """``(...)`` angle, degrees, between the palm's normal and the direction from the hand to the camera.

    0° = the palm faces the camera, 90° = seen edge-on, 180° = the back of the hand faces it. ``joints_cam``
    ``(..., 21, 3)`` in the camera frame (the camera at the origin); the hand's position is its joints' centroid.
    """
    dorsal = palm_frame(joints_cam)[..., 2]  # unit, pointing out of the back of the hand
    to_camera = normalize(-joints_cam.mean(dim=-2))
    cos = -(dorsal * to_camera).sum(dim=-1)  # the palm's normal is -dorsal
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))
