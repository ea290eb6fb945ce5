"""What a run directory holds, as typed and versioned records: the one definition its writers (the engine, the
live doctor, ``trainwell eval --out``) and its readers (``trainwell doctor``, ``trainwell report``, the trackers'
replay on resume, the tests) share.

=====================  ===============================================  =======================
file                   record                                           version
=====================  ===============================================  =======================
``metrics.jsonl``      :class:`~.metrics.MetricsLine` per logged step     :data:`METRICS_VERSION`
``status.json``        :class:`~.status.StatusRecord`                    :data:`STATUS_VERSION`
``findings.jsonl``     :class:`~.findings.Finding` and its line kinds     :data:`FINDINGS_VERSION`
``checkpoints/*.pt``   :class:`~.checkpoint.CheckpointMeta` (top level)   :data:`CHECKPOINT_FORMAT`
``eval --out`` JSON    :class:`~.evaluation.EvalOutput`                  :data:`EVAL_OUTPUT_VERSION`
=====================  ===============================================  =======================

A JSON-lines file opens with a schema line ``{"kind": "schema", "version": N}``; a file without one was written
before records had versions (version 0, the same line format, read as is). A reader meeting a version newer than it
knows raises :class:`RecordVersionError` naming the file and both versions, instead of misreading it.

This package imports nothing else of trainwell (like ``trainwell.metrics``): everything may depend on it.
"""

from trainwell.records.checkpoint import CHECKPOINT_FORMAT, CheckpointMeta
from trainwell.records.evaluation import EVAL_OUTPUT_VERSION, EvalOutput, eval_output, read_eval_output
from trainwell.records.findings import FINDINGS_FILE, FINDINGS_VERSION, Finding, read_findings
from trainwell.records.jsonl import RecordVersionError, read_jsonl
from trainwell.records.metrics import METRICS_FILE, METRICS_VERSION, MetricsLine, metrics_line, read_metrics
from trainwell.records.status import STATUS_FILE, STATUS_VERSION, StatusRecord, read_status, status_record

__all__ = [
    "CHECKPOINT_FORMAT",
    "EVAL_OUTPUT_VERSION",
    "FINDINGS_FILE",
    "FINDINGS_VERSION",
    "METRICS_FILE",
    "METRICS_VERSION",
    "STATUS_FILE",
    "STATUS_VERSION",
    "CheckpointMeta",
    "EvalOutput",
    "Finding",
    "MetricsLine",
    "RecordVersionError",
    "StatusRecord",
    "eval_output",
    "metrics_line",
    "read_eval_output",
    "read_findings",
    "read_jsonl",
    "read_metrics",
    "read_status",
    "status_record",
]
