"""Files that cannot be read as what they claim to be (not UTF-8, nested past any sense) fail
the run through the real command line with one line naming the file, no traceback, and leave
an earlier report as it was."""

import pytest

DEEP_JSON = "[" * 100_000 + "]" * 100_000
DEEP_YAML = "a: " + "[" * 20_000 + "]" * 20_000

BAD = [
    ("data.json", b"\xff[1]", ["--wild-suite=data.json"], "data.json: data file is not UTF-8 text (byte 0)"),
    ("data.json", DEEP_JSON.encode(), ["--wild-suite=data.json"], "data.json:1: JSON nested too deeply"),
    ("data.jsonl", b'{"id": 1}\n' + DEEP_JSON.encode(), ["--wild-suite=data.jsonl"], "data.jsonl:2: JSON nested too deeply"),
    ("hp.yaml", b"lr: 0.1\n\xfe\n", ["--wild-hparams=hp.yaml"], "hp.yaml: hyperparameters is not UTF-8 text (byte 8)"),
    ("hp.yaml", DEEP_YAML.encode(), ["--wild-hparams=hp.yaml"], "hp.yaml: hyperparameters nested too deeply"),
    ("suite.yaml", b"name: x\n\xff", ["--wild-suite=suite.yaml"], "suite.yaml: suite is not UTF-8 text (byte 8)"),
]


@pytest.mark.parametrize(("name", "content", "args", "message"), BAD,
                         ids=["data-not-utf8", "data-deep", "jsonl-deep", "hparams-not-utf8", "hparams-deep",
                              "suite-not-utf8"])
def test_an_unreadable_file_fails_the_run_with_one_line_and_loses_nothing(pytester, name, content, args, message):
    (pytester.path / name).write_bytes(content)
    report = pytester.path / "report.json"
    report.write_text('{"earlier": "complete report"}\n')
    result = pytester.runpytest_subprocess("--wild", "--editor=ft-m", "-p", "no:cacheprovider",
                                           "--wild-report=report.json", *args)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret != 0
    assert message in output
    assert "Traceback" not in output and "RecursionError" not in output
    assert report.read_text() == '{"earlier": "complete report"}\n'
