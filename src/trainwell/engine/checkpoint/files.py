"""Durable files: the one write path for everything the engine writes, and verified weights-only loading.

:func:`atomic_write` (temp file → flush → fsync → atomic rename → fsync of the directory) serves checkpoints,
``metrics.jsonl`` trimming and the run status, so a crash leaves the old file or the new one, never half of one.

A checkpoint is a dict of tensors and plain containers only, so ``torch.load(path, weights_only=True)``
opens it and nothing in it can run code. Its ``"checksum"`` entry holds a sha256 over the rest of its
content (every key, every primitive, every tensor's dtype, shape and bytes), so a truncated or
bit-flipped file is detected when it is loaded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch


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
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
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


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write a file so that a crash leaves the old content or the new one, never a mix.

    ``write(handle)`` fills a temp file in the same directory → flush + fsync → atomic rename → fsync of the
    directory. On any error (disk full, permission denied, interrupted) the temp file is removed and ``path``
    is untouched.

    Raises:
        OSError: from the filesystem (callers turn it into their own error message).
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException:  # an OSError, an error in write(), a second Ctrl-C: leave no half-written temp file
        _remove_quietly(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text file."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def serialize(content: Mapping[str, Any], handle: IO[bytes]) -> None:
    """How a checkpoint's bytes are produced (``torch.save``); the one place a test can substitute a writer."""
    torch.save(content, handle)


def atomic_save(payload: Mapping[str, Any], path: Path) -> None:
    """Write ``payload`` (plus its checksum) to ``path`` durably (:func:`atomic_write`).

    Raises:
        CheckpointError: what went wrong, naming the file.
    """
    content = dict(payload)
    content.pop("checksum", None)
    content["checksum"] = {"sha256": content_digest(content)}
    try:
        atomic_write(path, lambda handle: serialize(content, handle))
    except OSError as err:
        raise _write_error(path, err) from err


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


# What torch's weights-only unpickler says when it refuses a global: one outside its allowlist, or one whose
# module is blocked outright (os/posix, subprocess, ...). torch 2.6+ words both this way.
_REFUSED_GLOBAL = re.compile(
    r"Unsupported global: GLOBAL (?P<allowlist>\S+) was not an allowed global"
    r"|unsupported GLOBAL (?P<blocked>\S+) whose module \S+ is blocked",
)


def _refused_global(message: str) -> tuple[str, str] | None:
    """``(global, torch's sentence)`` when ``message`` is the weights-only unpickler refusing a Python global."""
    found = _REFUSED_GLOBAL.search(message)
    if found is None:
        return None
    name = found.group("allowlist") or found.group("blocked")
    sentence = message[message.rfind("\n", 0, found.start()) + 1 : found.end()]
    sentence = sentence.split("WeightsUnpickler error:")[-1]
    return name, " ".join(sentence.split())


def _explain_load_error(path: Path, err: Exception) -> CheckpointError:
    text = str(err)
    refused = _refused_global(text)
    if refused is not None:
        name, sentence = refused
        return UnsafeCheckpointError(
            f"Refusing to load '{path}': unpickling it would need to run code ({sentence}); the refused global is "
            f"'{name}'. trainwell loads checkpoints with weights_only=True only and ran nothing in it. Do not use "
            f"a file from a source you do not trust; if you wrote this file yourself, re-save its state dict "
            f"(tensors and plain containers) with torch.save."
        )
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s|\n\n|$)", text, flags=re.S)
    detail = " ".join(found.group(1).split()) if found else ""
    if isinstance(err, EOFError):
        reason = "the file is empty or ends too early"
    else:
        reason = detail or " ".join(text.split(". ")[0].split()) or type(err).__name__
    return CorruptCheckpointError(
        f"Checkpoint '{path}' is truncated or damaged, or not a weights-only checkpoint ({reason}); "
        f"nothing in it was run."
    )
