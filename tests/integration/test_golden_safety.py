"""Goldens arrive in pull requests, so they are read as data and never followed as links
(issue 12): a golden that is a symbolic link fails its case with one line and its target is
shown nowhere, not in the terminal and not in JUnit XML; an update through a golden directory
that is a link reads, writes and deletes nothing there; a golden that is not UTF-8 fails
with one line until `--snapshot-update` replaces it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_wild.results.golden import GoldenRefused, checked_golden_path
from tests.integration.test_golden import GOLDEN, WILD, clean_env, recorded, with_goldens  # noqa: F401 (fixtures)

SECRET = "CI_TOKEN=ghs_not-a-real-secret-4f2a"
RULE = "goldens are read and written only as regular files in real directories inside golden/"


def tree(directory: Path) -> dict:
    """Every file under `directory`, by relative path, with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def secret(tmp_path_factory) -> Path:
    """A file outside the project, standing in for /proc/self/environ."""
    path = tmp_path_factory.mktemp("outside") / "environ"
    path.write_text(SECRET + "\n")
    return path


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "n2"])
def test_a_golden_that_is_a_symbolic_link_fails_its_case_and_its_target_is_never_shown(
        pytester, recorded, secret, workers):
    directory = with_goldens(pytester, recorded)
    link = directory / "tw-0034.json"
    link.unlink()
    link.symlink_to(secret)
    result = pytester.runpytest_subprocess(*WILD, "-k", "tw-0034 or tw-0145", "--junitxml=junit.xml", *workers)
    result.assert_outcomes(passed=1, failed=1)
    shown = result.stdout.str() + result.stderr.str() + (pytester.path / "junit.xml").read_text()
    assert SECRET not in shown and "ghs_" not in shown
    where = f"{GOLDEN}/tw-0034.json"
    result.stdout.fnmatch_lines([f"golden {where}: cannot compare (GoldenRefused: {where} is a symbolic link; {RULE})"])
    assert link.is_symlink() and secret.read_text() == SECRET + "\n"


def test_an_update_neither_follows_nor_replaces_a_golden_that_is_a_symbolic_link(pytester, recorded, secret):
    directory = with_goldens(pytester, recorded)
    link = directory / "tw-0034.json"
    link.unlink()
    link.symlink_to(secret)
    result = pytester.runpytest_subprocess(*WILD, "-k", "tw-0034", "--snapshot-update")
    result.assert_outcomes(failed=1)
    assert SECRET not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines([f"*{GOLDEN}/tw-0034.json is a symbolic link; {RULE})"])
    assert link.is_symlink() and secret.read_text() == SECRET + "\n"


@pytest.mark.parametrize("link, named, workers", [
    pytest.param(GOLDEN, f"{GOLDEN} is a symbolic link; {RULE}", (), id="suite-dir"),
    pytest.param(GOLDEN, f"{GOLDEN} is a symbolic link; {RULE}", ("-n", "2"), id="suite-dir-n2"),
    pytest.param(GOLDEN.parent, f"{GOLDEN.parent} is a symbolic link; {RULE}", (), id="editor-dir"),
    pytest.param(Path("golden"), "golden leads out of the rootdir through a symbolic link; goldens are read and "
                 "written only inside the project", (), id="golden-root"),
])
def test_an_update_through_a_golden_directory_that_is_a_symbolic_link_touches_nothing_there(
        pytester, recorded, tmp_path_factory, link, named, workers):
    with_goldens(pytester, recorded)
    outside = tmp_path_factory.mktemp("outside")
    target = outside / GOLDEN  # what `link` would lead to: unrelated JSON files, and no golden
    target.mkdir(parents=True)
    (target / "x.json").write_text('{"unrelated": 1}\n')
    (target / "y.json").write_text('{"unrelated": 2}\n')
    before = tree(outside)
    os.rename(pytester.path / link, pytester.path / f"{link}.real")
    (pytester.path / link).symlink_to(outside / link, target_is_directory=True)
    result = pytester.runpytest_subprocess(*WILD, "--snapshot-update", *workers)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()  # refused before any worker starts
    result.stderr.fnmatch_lines([f"ERROR: {named}"])
    assert tree(outside) == before


def test_a_golden_that_is_not_utf8_fails_with_one_line_and_an_update_replaces_it(pytester, recorded):
    directory = with_goldens(pytester, recorded)
    golden = directory / "tw-0034.json"
    good = golden.read_bytes()
    golden.write_bytes(b'{"case": "\xff\xfe"}\n')
    compared = pytester.runpytest_subprocess(*WILD, "-k", "tw-0034")
    compared.assert_outcomes(failed=1)
    compared.stdout.fnmatch_lines([f"golden {GOLDEN}/tw-0034.json is not valid UTF-8: run with --snapshot-update to replace it"])
    updated = pytester.runpytest_subprocess(*WILD, "-k", "tw-0034", "--snapshot-update")
    updated.assert_outcomes(passed=1)
    assert golden.read_bytes() == good


def test_checked_golden_path_allows_regular_files_and_absent_ones_and_refuses_the_rest(tmp_path):
    root = tmp_path / "golden"
    directory = root / "tinyworld" / "ft-m" / "open"
    directory.mkdir(parents=True)
    (directory / "a.json").write_text("{}\n")
    (directory / "b.json").mkdir()
    (directory / "c.json").symlink_to(directory / "a.json")
    (root / "linked").symlink_to(directory, target_is_directory=True)
    assert checked_golden_path(directory / "a.json", root) == directory / "a.json"
    assert checked_golden_path(directory / "new.json", root) == directory / "new.json"
    assert checked_golden_path(root / "absent" / "x.json", root) == root / "absent" / "x.json"
    assert checked_golden_path(directory, root, directory=True) == directory
    refused = {
        directory / "b.json": "golden/tinyworld/ft-m/open/b.json is not a regular file",
        directory / "c.json": "golden/tinyworld/ft-m/open/c.json is a symbolic link",
        root / "linked" / "a.json": "golden/linked is a symbolic link",
        directory / ".." / ".." / ".." / ".." / "x.json": "is not inside golden/",
        tmp_path / "x.json": "is not inside golden/",
    }
    for path, message in refused.items():
        with pytest.raises(GoldenRefused, match=message.replace(".", r"\.")):
            checked_golden_path(path, root)
    with pytest.raises(GoldenRefused, match="a.json is not a directory"):
        checked_golden_path(directory / "a.json" / "x.json", root)


@pytest.mark.parametrize("make", ["golden-link", "directory-link", "not-a-golden"])
def test_the_table_command_refuses_links_and_bad_goldens_in_one_line(tmp_path, secret, make):
    directory = tmp_path / "golden" / "tinyworld" / "memit" / "tinyworld"
    directory.mkdir(parents=True)
    (directory / "tw-0001.json").write_text('{"scores": {"wild": {"reliability": 1.0}}}')
    source, expected = directory, None
    if make == "golden-link":
        (directory / "tw-0002.json").symlink_to(secret)
        expected = "tinyworld/tw-0002.json is a symbolic link; goldens are read and written only as regular files"
    elif make == "directory-link":
        source = tmp_path / "link"
        source.symlink_to(directory)
        expected = f"{source}: not a directory (a golden directory or a JSON report)"
    else:
        (directory / "tw-0002.json").write_text("[1, 2]")
        expected = f"{directory / 'tw-0002.json'}: no 'scores' object of modes; not a golden"
    done = subprocess.run([sys.executable, "-m", "pytest_wild.cli", "table", str(source)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and expected in done.stderr, done.stderr
    assert SECRET not in done.stderr
