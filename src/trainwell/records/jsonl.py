"""JSON-lines record files: a schema line first, one object per line, torn last lines tolerated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

SCHEMA_KIND = "schema"
"""``kind`` of the first line of a versioned JSON-lines file: ``{"kind": "schema", "version": N}``."""


class RecordVersionError(ValueError):
    """A record file was written by a newer trainwell than this one reads; the message names the file and versions."""

    def __init__(self, path: Path | str, found: Any, supported: int) -> None:
        super().__init__(
            f"'{path}' holds records of version {found}, but this trainwell reads versions up to {supported}: it "
            f"was written by a newer trainwell. Upgrade trainwell (pip install -U trainwell) to read it."
        )
        self.path, self.found, self.supported = Path(path), found, supported


def check_version(found: Any, supported: int, path: Path | str) -> int:
    """``found`` as an int (``None``: 0, a file from before versions); refuse one newer than ``supported``."""
    version = 0 if found is None else found
    if not isinstance(version, int) or isinstance(version, bool) or version < 0 or version > supported:
        raise RecordVersionError(path, found, supported)
    return version


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file (``[]`` when it does not exist); a torn line (a running or killed
    run's last write) is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def read_versioned(path: Path, supported: int) -> tuple[int, list[dict[str, Any]]]:
    """The file's records version and its lines other than schema lines.

    Raises:
        RecordVersionError: a schema line names a version newer than ``supported``.
    """
    version, records = 0, []
    for record in read_jsonl(path):
        if record.get("kind") == SCHEMA_KIND:
            version = max(version, check_version(record.get("version"), supported, path))
        else:
            records.append(record)
    return version, records


def open_for_append(path: Path, version: int) -> IO[str]:
    """Open ``path`` for appending lines; a new (or empty) file gets its schema line first.

    An existing file keeps the schema line it began with: a resumed run appends records of the same version.
    """
    handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 (the caller owns it; the writer closes it)
    if handle.tell() == 0:
        handle.write(json.dumps({"kind": SCHEMA_KIND, "version": version}) + "\n")
        handle.flush()
    return handle
