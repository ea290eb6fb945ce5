"""3D detection task pack: OpenPCDet-style PointPillars on synthetic LiDAR scenes or KITTI, KITTI AP_R40.

``task.class_path: trainwell.tasks.detection3d:Detection3DTask``. Modules: :mod:`.boxes` (conventions, rotated IoU,
NMS), :mod:`.ap` (KITTI AP_R40, recall), :mod:`.scenes` (synthetic LiDAR), :mod:`.kitti` (formats, conversions),
:mod:`.augment`, :mod:`.datasets` (datasets, collate), :mod:`.anchors`, :mod:`.model` (PointPillars),
:mod:`.checks` (doctor), :mod:`.task`.
"""

from trainwell.tasks.detection3d.task import Detection3DDataConfig, Detection3DTask, Detection3DTaskConfig

__all__ = ["Detection3DDataConfig", "Detection3DTask", "Detection3DTaskConfig"]
