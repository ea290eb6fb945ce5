"""Hand-pose task pack: synthetic hands, 2D→3D lifting and RGB-D image models, UTNet's loss parts, MPJPE (mm).

``task.class_path: trainwell.tasks.hand_pose:HandPoseTask`` (2D→3D lifting) or
``trainwell.tasks.hand_pose:RGBDHandPoseTask`` (RGB-D crops). Modules: :mod:`.skeleton` (joints, bones, limits,
angles), :mod:`.synthetic` (the generator and the camera), :mod:`.datasets`, :mod:`.model`, :mod:`.losses`,
:mod:`.task`; the RGB-D side: :mod:`.surface` (capsule hand, mesh vertices), :mod:`.render`, :mod:`.augment`,
:mod:`.rgbd_data`, :mod:`.image_model`, :mod:`.rgbd_losses`, :mod:`.rgbd_task`, :mod:`.image_checks`,
:mod:`.readers` (FreiHAND, HO3D), :mod:`.submit` (benchmark files, ``predict``).
"""

from trainwell.tasks.hand_pose.rgbd_task import RGBDDataConfig, RGBDHandPoseTask, RGBDTaskConfig
from trainwell.tasks.hand_pose.task import HandPoseDataConfig, HandPoseTask, HandPoseTaskConfig

__all__ = [
    "HandPoseDataConfig",
    "HandPoseTask",
    "HandPoseTaskConfig",
    "RGBDDataConfig",
    "RGBDHandPoseTask",
    "RGBDTaskConfig",
]
