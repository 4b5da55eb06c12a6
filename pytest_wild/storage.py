"""Files written whole or not at all, and where pytest-wild's caches live: what every stage
that writes (reports, goldens, run directories, converted models, statistics, MEND networks)
shares, so none of them imports a later stage for it."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

CACHE_ENV = "PYTEST_WILD_CACHE"


def cache_root() -> Path:
    """`$PYTEST_WILD_CACHE` or `~/.cache/pytest-wild`: every pytest-wild cache lives below."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pytest-wild").expanduser()


def write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, payload: bytes) -> None:
    """Write to a uniquely named temporary file beside `path`, flush it to disk, then rename:
    a crash (or a concurrent reader) never sees half a file where a whole one was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def sync(path: Path) -> None:
    """Make a file's bytes, or a directory's entries, durable before a rename publishes them."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
