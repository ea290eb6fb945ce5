"""Hand-pose task pack: synthetic hands, a 2D→3D lifting network, a multi-part loss, MPJPE / PA-MPJPE (mm).

``task.class_path: trainwell.tasks.hand_pose:HandPoseTask``. Modules: :mod:`.skeleton` (joints, bones,
limits, angles), :mod:`.synthetic` (the generator and the camera), :mod:`.datasets`, :mod:`.model`,
:mod:`.losses`, :mod:`.task`.
"""

from trainwell.tasks.hand_pose.task import HandPoseDataConfig, HandPoseTask, HandPoseTaskConfig

__all__ = ["HandPoseDataConfig", "HandPoseTask", "HandPoseTaskConfig"]
