"""Where a run will write, checked before the first edit: its report and Markdown table (an
hour of GPU time must not end in a write that fails, or in a report written over the suite's
data, a golden or the other output) and its cache directory."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..cases.case import WildInputError
from ..storage import CACHE_ENV, cache_root


def check_cache_root() -> str | None:
    """A cache root (or its `stats` directory) that exists but is not a directory is refused;
    one that cannot be written is allowed (a shared, read-only cache is read) and the
    returned note says that what is missing is computed and not saved."""
    root = cache_root()
    for path in (root, root / "stats"):
        if path.exists() and not path.is_dir():
            raise WildInputError(f"{CACHE_ENV}: {path} is not a directory (the cache of statistics lives there)")
    directory = _nearest_directory(root, CACHE_ENV)
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{root} cannot be written: statistics are read from it, and computed but not saved when missing"
    return None


def check_outputs(outputs: dict[str, Path | None], inputs: Iterable[Path], golden_root: Path | None,
                  run_dir: tuple[str, Path] | None = None) -> None:
    """`outputs` maps an option to its path. Each must differ from the others and from every
    input file, lie outside the golden root and the run directory (`run_dir`: its option and
    path; a report there would replace its run.json), and be writable (probed with a temporary
    file in its nearest existing directory, which is removed again). The run directory lies
    outside the golden root too."""
    seen: dict[Path, str] = {}
    taken = {_key(path): path for path in inputs}
    if run_dir is not None and golden_root is not None and _key(run_dir[1]).is_relative_to(_key(golden_root)):
        raise WildInputError(f"{run_dir[0]}: {run_dir[1]} lies inside the golden directory {golden_root}")
    for option, path in outputs.items():
        if path is None:
            continue
        key = _key(path)
        if key in seen:
            raise WildInputError(f"{option}: {path} is also the path of {seen[key]}; give each output its own file")
        if key in taken:
            raise WildInputError(f"{option}: {path} is an input of this run ({taken[key]}); it would be overwritten")
        if golden_root is not None and key.is_relative_to(_key(golden_root)):
            raise WildInputError(f"{option}: {path} lies inside the golden directory {golden_root}")
        if run_dir is not None and key.is_relative_to(_key(run_dir[1])):
            raise WildInputError(f"{option}: {path} lies inside the run directory {run_dir[1]} ({run_dir[0]})")
        seen[key] = option
        _check_writable(option, path)


def _nearest_directory(start: Path, option: str, path: Path | None = None) -> Path:
    """The nearest existing ancestor of `start` (itself included), where a missing `path`
    would be created; one line naming `option` when that is not a directory."""
    directory = start
    while not directory.exists():
        directory = directory.parent
    if not directory.is_dir():
        raise WildInputError(f"{option}: {path or start} cannot be created: {directory} is not a directory")
    return directory


def _key(path: Path) -> Path:
    return Path(os.path.realpath(path.expanduser()))


def _check_writable(option: str, path: Path) -> None:
    if path.is_dir():
        raise WildInputError(f"{option}: {path} is a directory; name a file")
    directory = _nearest_directory(path.parent, option, path)
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".wild-probe-"):
            pass
    except OSError as exc:
        raise WildInputError(f"{option}: {path} cannot be written ({exc.strerror} in {directory})") from None
