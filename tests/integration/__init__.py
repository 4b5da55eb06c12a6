import contextlib
import importlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def outer_xdist_removed() -> dict[str, str]:
    """The environment without the outer run's xdist variables and addopts, which would make
    syrupy and the plugin in an inner pytest run believe they are an xdist worker."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))}


def import_what_runs_import(*more: str) -> None:
    """What an in-process run imports (and the modules `more`), imported before the first
    one, with the bundled model loaded and checked once: pytester drops the modules a run
    imports when it ends, and torch's C extension cannot be imported twice."""
    for name in ("pytest_wild.editors.finetune.ft", "pytest_wild.scores.evaluation", "pytest_wild.results.golden", "pytest_wild.model.stats",
                 *more):
        importlib.import_module(name)
    from pytest_wild.model.load import check_model, load_model

    load_model(None, "cpu")
    check_model(None)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """`directory` read-only while the block runs. Root ignores file modes, so there it is
    bind-mounted read-only over itself (the test is skipped where mounting is not allowed);
    elsewhere its mode is 0o555."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("root, and mount --bind is not allowed: no way to make a directory read-only")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(directory)], capture_output=True).returncode != 0:
            pytest.skip("root, and a read-only remount is not allowed")
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


@contextlib.contextmanager
def full_disk(directory: Path, keep: dict[str, bytes], fill: bool = True) -> Iterator[None]:
    """`directory` a tiny file system (64 KiB) holding the files `keep`, filled up unless not
    `fill`, while the block runs (root only: a tmpfs is mounted there; skipped elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is made by mounting a tmpfs, which needs root")
    directory.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(directory)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        for name, content in keep.items():
            (directory / name).write_bytes(content)
        with contextlib.suppress(OSError), (directory / "filler").open("wb") as filler:
            while fill:
                filler.write(b"\0" * 4096)
                filler.flush()
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)
