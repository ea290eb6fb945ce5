"""``checkpoint.keep_best: k``: the k best checkpoints by ``eval.best_metric``, beside ``best.pt``.

Each is named for its step and value, ``best_step_00000120_mpjpe_12.3456.pt`` (the metric expression made safe for a
file name), and is a hard link to the ``last.pt`` written at that evaluation — with sharded checkpoints a directory
``best_step_….dcp`` of hard links to ``last.dcp``'s files. When a better one arrives and k are kept, the worst is
deleted (after the new one is durable). Ties keep the earlier checkpoint.

On resume the list is rebuilt from the files themselves: each ``best_step_*.pt`` is loaded and its value recomputed
from its ``train_state.last_metrics`` with the current rule, so a changed ``eval.best_metric`` ranks the old files by
the new rule. Files written after the resumed step (by the interrupted part of the run) and files that do not load
are left on disk, not ranked, and named in a warning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainwell.config.expressions import MetricExpression, is_better
from trainwell.engine.checkpoint.files import CheckpointError, fsync_directory, link_or_copy, load_checkpoint
from trainwell.engine.checkpoint.sharded import SUFFIX, link_directory, read_meta, remove

_TOP_K = re.compile(r"^best_step_(\d{8,})_.+\.(pt|dcp)$")


def metric_slug(text: str) -> str:
    """``(mpjpe + pa_mpjpe) / 2`` → ``mpjpe_pa_mpjpe_2``: the metric expression as a file-name part."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "metric"


@dataclass(frozen=True)
class Ranked:
    """One kept checkpoint: its step, its value under the current rule, its file."""

    step: int
    value: float
    path: Path


class TopKCheckpoints:
    """Keeps the ``k`` best checkpoints of ``directory`` by one metric expression and mode (rank 0 only)."""

    def __init__(
        self,
        directory: Path,
        k: int,
        metric: MetricExpression,
        mode: str,
        log: Callable[[str], None],
        *,
        sharded: bool = False,
    ) -> None:
        self.directory, self.k, self.metric, self.mode, self.log = directory, k, metric, mode, log
        self.suffix = SUFFIX if sharded else ".pt"
        """Sharded checkpoints (directories) are kept as ``best_step_….dcp``."""
        self.kept: list[Ranked] = []
        """Best first."""

    def name(self, step: int, value: float) -> str:
        return f"best_step_{step:08d}_{metric_slug(self.metric.text)}_{value:.4f}{self.suffix}"

    def _rank(self, entries: list[Ranked]) -> list[Ranked]:
        """Best first; equal values by step (the earlier first)."""
        ordered = sorted(entries, key=lambda r: r.step)
        result: list[Ranked] = []
        for entry in ordered:  # a stable insertion: an equal value never overtakes an earlier one
            index = next((i for i, kept in enumerate(result) if is_better(entry.value, kept.value, self.mode)), None)
            result.insert(len(result) if index is None else index, entry)
        return result

    def offer(self, source: Path, step: int, value: float) -> list[Path]:
        """Keep ``source`` (the checkpoint just written at ``step``) if ``value`` is among the k best; returns the files
        written. The file that falls out of the k best is deleted."""
        if len(self.kept) >= self.k and not is_better(value, self.kept[-1].value, self.mode):
            return []
        target = self.directory / self.name(step, value)
        if source.is_dir():
            link_directory(source, target)
        else:
            link_or_copy(source, target)
        ranked = self._rank([r for r in self.kept if r.step != step] + [Ranked(step, value, target)])
        self.kept, doomed = ranked[: self.k], ranked[self.k :]
        for entry in doomed:
            remove(entry.path)
        if doomed:
            fsync_directory(self.directory)
        return [target]

    def rebuild(self, up_to_step: int) -> list[Ranked]:
        """After a resume at ``up_to_step``: rank the ``best_step_*.pt`` files present from their own metrics."""
        found, skipped = [], []
        for path in sorted(self.directory.glob(f"best_step_*{self.suffix}")):
            match = _TOP_K.match(path.name)
            if match is None:
                continue
            step = int(match.group(1))
            if step > up_to_step:
                skipped.append(f"{path.name} (written after step {up_to_step}, by the interrupted part of the run)")
                continue
            try:
                payload = read_meta(path) if path.is_dir() else load_checkpoint(path)
                value = self.metric(payload["train_state"]["last_metrics"])
            except (CheckpointError, KeyError) as err:
                skipped.append(f"{path.name} ({err})")
                continue
            found.append(Ranked(step, value, path))
        if skipped:
            self.log("checkpoint.keep_best: not ranking (left on disk) " + "; ".join(skipped))
        ranked = self._rank(found)
        self.kept = ranked[: self.k]
        for entry in ranked[self.k :]:  # k was lowered since: the surplus goes, as it would have
            remove(entry.path)
        return self.kept
