"""Checkpoint files: durable writes, verified weights-only loading, and the files in ``<run>/checkpoints``.

``<run>/checkpoints`` holds:

* ``last.pt`` — the newest state: written at every epoch end, every ``checkpoint.latest_every_steps``
  optimizer steps inside an epoch, and when a signal stops the run;
* ``epoch_NNNN.pt`` — every ``checkpoint.every_epochs`` epochs; the newest ``checkpoint.keep`` are kept;
* ``best.pt`` — the best ``eval.best_metric`` so far; never rotated away.

A checkpoint is a dict of tensors and plain containers only, so ``torch.load(path, weights_only=True)``
opens it and nothing in it can run code. Its ``"checksum"`` entry holds a sha256 over the rest of its
content (every key, every primitive, every tensor's dtype, shape and bytes), so a truncated or
bit-flipped file is detected when it is loaded. Files written at the same moment (``last.pt`` and
``epoch_0003.pt`` at the end of epoch 3) are hard links to one file where the filesystem allows it:
one serialization, and no file is ever modified in place, so a link never sees a later write.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import signal
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainwell.config.schema import CheckpointConfig

LAST = "last.pt"
BEST = "best.pt"
_PERIODIC = re.compile(r"^epoch_(\d+)\.pt$")
_TEMP = re.compile(r"^\..+\.tmp-\d+$")

TEST_KILL_IN_SAVE_ENV = "TRAINWELL_TEST_KILL_IN_SAVE"
"""Test-only hook: ``N`` makes the N-th checkpoint write of this process stop half-way through the temp
file and SIGKILL the process, to test that a crash during a save loses nothing. Never set it otherwise."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file and what to do."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, damaged, or its content does not match its checksum."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs arbitrary code to be unpickled; trainwell refuses it and runs nothing in it."""


# -- content checksum ---------------------------------------------------------------------------


def content_digest(payload: Mapping[str, Any]) -> str:
    """sha256 over a checkpoint's content: keys, primitives, and each tensor's dtype, shape and bytes.

    Also checks that the payload holds only what ``weights_only`` loading accepts.

    Raises:
        CheckpointError: naming the key path of a value that is not a tensor or a plain container/primitive.
    """
    digest = hashlib.sha256()
    _feed(digest, payload, "checkpoint")
    return digest.hexdigest()


def _feed(digest: Any, obj: Any, where: str) -> None:
    kind = type(obj)
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach()
        if tensor.layout != torch.strided:
            tensor = tensor.to_dense()
        tensor = tensor.cpu().contiguous()
        digest.update(f"tensor|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(obj, Mapping):
        digest.update(f"dict|{len(obj)}|".encode())
        for key, value in obj.items():
            _feed(digest, key, where)
            _feed(digest, value, f"{where}[{key!r}]")
    elif isinstance(obj, list | tuple):  # torch.Size is a tuple
        digest.update(f"{'list' if isinstance(obj, list) else 'tuple'}|{len(obj)}|".encode())
        for i, value in enumerate(obj):
            _feed(digest, value, f"{where}[{i}]")
    elif obj is None or kind in (bool, int, float, str, torch.dtype, torch.device):
        text = repr(obj).encode()
        digest.update(f"{kind.__name__}|{len(text)}|".encode() + text)
    elif kind is bytes:
        digest.update(f"bytes|{len(obj)}|".encode() + obj)
    else:
        raise CheckpointError(
            f"Cannot save {where}: it is a {kind.__module__}.{kind.__qualname__}. Checkpoints hold only tensors "
            f"and plain containers/primitives so that weights-only loading can open them; convert it "
            f"(e.g. float(x), x.tolist(), torch.from_numpy(x), str(path))."
        )


def to_plain(obj: Any) -> Any:
    """``obj`` with paths as strings and NumPy scalars/arrays as Python numbers/tensors (for configs, metrics)."""
    if isinstance(obj, Mapping):
        return {key: to_plain(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_plain(v) for v in obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if type(obj).__module__ == "numpy":
        return obj.item() if getattr(obj, "ndim", 0) == 0 else torch.from_numpy(obj)
    return obj


# -- writing ------------------------------------------------------------------------------------

_num_saves = 0  # for the test-only hook


def atomic_save(payload: Mapping[str, Any], path: Path) -> None:
    """Write ``payload`` (plus its checksum) to ``path`` so that a crash leaves the old file or the new one.

    Temp file in the same directory → flush + fsync → atomic rename → fsync the directory. On any error
    (disk full, permission denied, interrupted) the temp file is removed and ``path`` is untouched.

    Raises:
        CheckpointError: what went wrong, naming the file.
    """
    global _num_saves
    _num_saves += 1
    content = dict(payload)
    content.pop("checksum", None)
    content["checksum"] = {"sha256": content_digest(content)}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            torch.save(content, handle)
            handle.flush()
            _maybe_test_kill_mid_write(handle)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except OSError as err:
        _remove_quietly(tmp)
        raise _write_error(path, err) from err
    except BaseException:  # an error in torch.save, a second Ctrl-C: leave no half-written temp file
        _remove_quietly(tmp)
        raise


def _write_error(path: Path, err: OSError) -> CheckpointError:
    """The error for a failed checkpoint write (disk full, permission denied, …): what happened, what to do."""
    return CheckpointError(
        f"Could not write checkpoint '{path}': {err.strerror or err}. The previous checkpoints are untouched; "
        f"free disk space or fix the permissions of '{path.parent}', then resume with --resume auto."
    )


def link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` hold ``source``'s bytes durably: a hard link if possible, else a copy, then a rename."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        _remove_quietly(tmp)
        try:
            os.link(source, tmp)
        except OSError:  # no hard links on this filesystem (some network or FUSE mounts): copy
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, length=16 * 2**20)
                dst.flush()
                os.fsync(dst.fileno())
        os.replace(tmp, target)
        fsync_directory(target.parent)
    except OSError as err:
        _remove_quietly(tmp)
        raise _write_error(target, err) from err


def fsync_directory(directory: Path) -> None:
    """Make renames and deletions in ``directory`` durable (where the filesystem supports it)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        # Some network and FUSE filesystems cannot fsync a directory; the rename itself was done.
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _maybe_test_kill_mid_write(handle: Any) -> None:
    """Test-only: simulate a crash half-way through writing (see ``TEST_KILL_IN_SAVE_ENV``)."""
    wanted = os.environ.get(TEST_KILL_IN_SAVE_ENV)
    if wanted and int(wanted) == _num_saves:
        handle.truncate(handle.tell() // 2)
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# -- reading ------------------------------------------------------------------------------------


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, require_checksum: bool = True
) -> dict[str, Any]:
    """Load with ``weights_only=True`` and verify the checksum; never falls back to unsafe unpickling.

    Args:
        path: the checkpoint file.
        map_location: where tensors go.
        require_checksum: refuse files without a trainwell checksum (False for plain state dicts made
            elsewhere, e.g. by ``--init-from``; their content is then loaded unverified).

    Raises:
        UnsafeCheckpointError: the file needs code to be unpickled (nothing in it was run).
        CorruptCheckpointError: the file is truncated or damaged, or its content does not match its checksum.
        CheckpointError: it does not exist or holds something else than a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint '{path}' does not exist.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Detected pickle protocol 4 …" on foreign files
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise _explain_load_error(path, err) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"Checkpoint '{path}' does not hold a dict (it holds a {type(payload).__name__}).")
    checksum = payload.pop("checksum", None)
    if checksum is None:
        if require_checksum:
            raise CorruptCheckpointError(
                f"Checkpoint '{path}' has no checksum, so it cannot be verified: it was not written by trainwell."
            )
        return payload
    try:
        actual = content_digest(payload)
    except CheckpointError as err:
        raise CorruptCheckpointError(f"Checkpoint '{path}' holds unexpected content: {err}") from None
    expected = checksum.get("sha256") if isinstance(checksum, dict) else None
    if actual != expected:
        raise CorruptCheckpointError(
            f"Checkpoint '{path}' is damaged: its content does not match its sha256 checksum "
            f"(stored {str(expected)[:12]}…, computed {actual[:12]}…)."
        )
    return payload


def _explain_load_error(path: Path, err: Exception) -> CheckpointError:
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", text, flags=re.S)
    detail = " ".join(found.group(1).split()) if found else ""
    if re.search(r"Unsupported (global|class)|not an allowed global", detail):
        return UnsafeCheckpointError(
            f"Refusing to load '{path}': unpickling it would need to run code ({detail}). trainwell loads "
            f"checkpoints with weights_only=True only and ran nothing in it. If you wrote this file yourself "
            f"and trust it, re-save its state dict (tensors and plain containers) with torch.save."
        )
    if isinstance(err, EOFError):
        reason = "the file is empty or ends too early"
    else:
        reason = detail or " ".join(text.split(". ")[0].split()) or type(err).__name__
    return CorruptCheckpointError(
        f"Checkpoint '{path}' is truncated or damaged, or not a weights-only checkpoint ({reason}); "
        f"nothing in it was run."
    )


# -- model weights only (trainwell eval, --init-from) ---------------------------------------------


@dataclass
class WeightsReport:
    """How a checkpoint's model tensors matched a model."""

    path: Path
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """In the model, not in the checkpoint (kept as initialised)."""
    unexpected: list[str] = field(default_factory=list)
    """In the checkpoint, not in the model (ignored)."""
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    """``(name, checkpoint shape, model shape)`` (kept as initialised)."""

    @property
    def is_exact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 10) -> str:
        def names(items: list[str]) -> str:
            more = f" … and {len(items) - limit} more" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
        parts = [f"{len(self.loaded)} of {total} model tensors loaded from '{self.path}'"]
        if self.missing:
            parts.append(f"missing in the checkpoint: {names(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected (not in the model): {names(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{n} (checkpoint {tuple(a)} vs model {tuple(b)})" for n, a, b in self.mismatched]
            parts.append(f"shape mismatch: {names(shapes)}")
        return "; ".join(parts)


def model_state_of(payload: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The model state dict in a trainwell checkpoint (``payload["model"]``) or a plain state dict."""
    state = payload.get("model") if isinstance(payload.get("model"), dict) else payload
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"'{path}' holds neither a trainwell checkpoint nor a model state dict (a dict of tensors)."
        )
    keys = list(state)
    if all(k.startswith("module.") for k in keys):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_model_weights(
    model: nn.Module, path: str | Path, *, strict: bool = True, map_location: str | torch.device = "cpu"
) -> WeightsReport:
    """Copy the matching tensors of a checkpoint (or a plain state dict) into ``model``.

    Raises:
        CheckpointError: with ``strict``, if any key is missing, unexpected or has another shape
            (nothing is loaded then); also every error of :func:`load_checkpoint`.
    """
    path = Path(path)
    payload = load_checkpoint(path, map_location=map_location, require_checksum=False)
    state = model_state_of(payload, path)
    own = model.state_dict()
    report = WeightsReport(path=path)
    matched: dict[str, torch.Tensor] = {}
    for name, tensor in own.items():
        if name not in state:
            report.missing.append(name)
        elif tuple(state[name].shape) != tuple(tensor.shape):
            report.mismatched.append((name, tuple(state[name].shape), tuple(tensor.shape)))
        else:
            matched[name] = state[name]
            report.loaded.append(name)
    report.unexpected = [name for name in state if name not in own]
    if strict and not report.is_exact:
        raise CheckpointError(
            f"The weights in '{path}' do not match the model: {report.describe()}. Fix the model config, or "
            f"load only the matching tensors (trainwell train … --init-from-non-strict)."
        )
    model.load_state_dict(matched, strict=False)
    return report


# -- the checkpoint directory ---------------------------------------------------------------------


def periodic_name(epoch: int) -> str:
    """File name of the periodic checkpoint written after ``epoch`` completed epochs."""
    return f"epoch_{epoch:04d}.pt"


@dataclass(frozen=True)
class Rejected:
    """A checkpoint that could not be used, and why."""

    path: Path
    reason: str


class CheckpointManager:
    """Names, writes, rotates and finds the files of one run's ``checkpoints/`` directory (rank 0 only).

    Every write goes through :func:`atomic_save`; old periodic files are deleted only after the new one
    is durable.
    """

    def __init__(self, directory: Path, cfg: CheckpointConfig, log: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self.cfg = cfg
        self.log = log or (lambda message: None)

    def should_save_latest(self, global_step: int, at_epoch_end: bool) -> bool:
        """Whether to write ``last.pt`` after this optimizer step (the epoch end writes one anyway)."""
        every = self.cfg.latest_every_steps
        return every > 0 and global_step % every == 0 and not at_epoch_end

    def should_save_periodic(self, epochs_done: int) -> bool:
        every = self.cfg.every_epochs
        return every > 0 and self.cfg.keep > 0 and epochs_done % every == 0

    def save_latest(self, payload: Mapping[str, Any]) -> Path:
        """Write ``last.pt``."""
        path = self.directory / LAST
        atomic_save(payload, path)
        return path

    def save_epoch_end(self, payload: Mapping[str, Any], *, epochs_done: int, best: bool) -> list[Path]:
        """``last.pt``, then ``epoch_NNNN.pt`` (rotated) and ``best.pt`` as links to it; returns what was written."""
        last = self.save_latest(payload)
        written = [last]
        if self.should_save_periodic(epochs_done):
            periodic = self.directory / periodic_name(epochs_done)
            link_or_copy(last, periodic)
            written.append(periodic)
            self.rotate()
        if best:
            link_or_copy(last, self.directory / BEST)
            written.append(self.directory / BEST)
        return written

    def periodic_files(self) -> list[tuple[int, Path]]:
        """``(epoch, path)`` of the periodic checkpoints present, oldest first."""
        found = []
        for path in self.directory.glob("epoch_*.pt"):
            match = _PERIODIC.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def rotate(self) -> list[Path]:
        """Delete all but the newest ``checkpoint.keep`` periodic checkpoints; returns the deleted files."""
        files = self.periodic_files()
        doomed = [path for _, path in files[: max(0, len(files) - self.cfg.keep)]]
        for path in doomed:
            path.unlink(missing_ok=True)
        if doomed:
            fsync_directory(self.directory)
        return doomed

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temp files left by a process killed during a save (they were never renamed into place)."""
        stale = [p for p in self.directory.glob(".*.tmp-*") if _TEMP.match(p.name)] if self.directory.is_dir() else []
        for path in stale:
            _remove_quietly(path)
        return stale

    def candidates(self) -> list[Path]:
        """Checkpoints to resume from, newest first (by write time; ``last.pt`` first among equals)."""
        if not self.directory.is_dir():
            return []
        paths = [self.directory / LAST, *(p for _, p in self.periodic_files()), self.directory / BEST]
        present = [p for p in paths if p.is_file()]

        def newest_first(path: Path) -> tuple[int, int, int]:
            match = _PERIODIC.match(path.name)
            rank = 2 if path.name == LAST else 1 if match else 0
            return (-path.stat().st_mtime_ns, -rank, -(int(match.group(1)) if match else 0))

        return sorted(present, key=newest_first)

    def find_resumable(
        self, map_location: str | torch.device = "cpu"
    ) -> tuple[Path, dict[str, Any], list[Rejected]] | None:
        """The newest checkpoint that loads and verifies, with the ones skipped on the way (and why).

        Returns ``None`` when the directory holds no checkpoint at all.

        Raises:
            CheckpointError: there are checkpoints but none is valid (listing each and why); starting
                afresh would overwrite them, so a person should look first.
        """
        rejected: list[Rejected] = []
        for path in self.candidates():
            try:
                payload = load_checkpoint(path, map_location=map_location)
            except CheckpointError as err:
                rejected.append(Rejected(path, str(err)))
                self.log(f"Skipping checkpoint '{path}': {err}")
                continue
            if "train_state" not in payload:
                rejected.append(Rejected(path, "it holds no training state"))
                continue
            return path, payload, rejected
        if rejected:
            listing = "; ".join(f"{r.path.name}: {r.reason}" for r in rejected)
            raise CheckpointError(
                f"No usable checkpoint in '{self.directory}' ({listing}). Move these files away to start afresh, "
                f"or pass --resume PATH to a good copy."
            )
        return None
