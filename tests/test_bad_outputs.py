"""Output paths that collide with each other, with an input or with the goldens, or that
cannot be written, stop the run before the first edit with one line, and nothing is lost."""

import shutil

import pytest

from pytest_wild.model import TINYWORLD_DIR

BAD = [
    (["--wild-report=out.md", "--wild-markdown=out.md"], "--wild-markdown: out.md is also the path of --wild-report"),
    (["--wild-suite=data.jsonl", "--wild-report=data.jsonl"], "--wild-report: data.jsonl is an input of this run"),
    (["--wild-hparams=hp.yaml", "--wild-markdown=hp.yaml"], "--wild-markdown: hp.yaml is an input of this run"),
    (["--wild-report=golden/r.json"], "--wild-report: golden/r.json lies inside the golden directory"),
    (["--wild-report=outdir"], "--wild-report: outdir is a directory; name a file"),
    (["--wild-report=data.jsonl/r.json"], "--wild-report: data.jsonl/r.json cannot be created: data.jsonl is not a directory"),
    (["--wild-report=/proc/wild-report.json"], "--wild-report: /proc/wild-report.json cannot be written"),
]


@pytest.mark.parametrize(("args", "message"), BAD,
                         ids=["report-is-markdown", "report-is-data", "markdown-is-hparams", "inside-goldens",
                              "a-directory", "under-a-file", "unwritable"])
def test_a_bad_output_path_stops_the_run_before_any_edit_and_loses_nothing(pytester, args, message):
    shutil.copy(TINYWORLD_DIR / "suite.jsonl", pytester.path / "data.jsonl")
    pytester.makefile(".yaml", hp="lr: 0.005")
    (pytester.path / "outdir").mkdir()
    before = files(pytester.path)
    result = pytester.runpytest_subprocess("--wild", "--editor=ft-m", "--wild-limit=2", "-p", "no:cacheprovider", *args)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret != 0
    assert message in output
    assert "Traceback" not in output and " passed" not in output
    assert files(pytester.path) == before


def files(directory) -> dict:
    """Every file's bytes, less the output captures pytester itself writes there."""
    return {p: p.read_bytes() for p in directory.rglob("*") if p.is_file() and p.name not in ("stdout", "stderr")}
