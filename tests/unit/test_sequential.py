"""A sequence of edits on the bundled model, in process: edits are kept (never restored in
between), each case's row is its score on the final model, and the curve's points are the
means of what the rows carry."""

from __future__ import annotations

import math

import pytest
import torch

from pytest_wild.options import Options, parse_checkpoints
from pytest_wild.cases import WildInputError
from pytest_wild.runtime import Runtime
from pytest_wild.sequential import checkpoints_for, curve, curve_lines, perplexity
from pytest_wild.suite import BUNDLED_SUITES, load_suite


@pytest.fixture(scope="module")
def sequence_run():
    suite = load_suite(BUNDLED_SUITES / "tinyworld-sequential.yaml", limit=5)
    options = Options(editor="ft-m", model=None, suite=None, limit=5, modes=("wild",), context=None, metric="em",
                      hparams_file=None, device="cpu", dtype="float32", stop_rule="published", sequential=5,
                      checkpoints=(1, 3))
    runtime = Runtime(options, suite)
    runtime.plan_sequence(suite.cases)
    original = {name: p.detach().clone() for name, p in runtime.loaded.model.named_parameters()}
    rows = [runtime.evaluate(case) for case in suite.cases]
    return runtime, rows, original


def test_the_edits_are_kept_and_each_row_is_the_final_models_score(sequence_run):
    runtime, rows, original = sequence_run
    model = runtime.loaded.model
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, original[name])]
    assert changed  # never restored
    again = runtime.evaluator.rows_now([case for case in runtime.sequence])
    assert [row["modes"] for row in again] == [row["modes"] for row in rows]
    assert [row["sequence"]["position"] for row in rows] == [1, 2, 3, 4, 5]
    assert all(set(row["sequence"]["checkpoints"]) == {str(c) for c in (1, 3, 5) if c >= row["sequence"]["position"]}
               for row in rows)
    assert all(row["timing"]["edit_seconds"] > 0 for row in rows)


def test_the_curve_is_the_mean_of_what_the_rows_carry(sequence_run):
    _, rows, _ = sequence_run
    points = curve(rows)
    assert [p["edits"] for p in points] == [1, 3, 5]
    last = points[-1]
    final = [row["modes"]["wild"]["reliability"] for row in rows]
    assert last["final"]["wild"]["reliability"] == pytest.approx(math.fsum(final) / len(final))
    assert points[0]["immediate"]["wild"] == rows[0]["sequence"]["immediate"]["wild"]
    first_three = [row["sequence"]["checkpoints"]["3"]["wild"]["locality"] for row in rows[:3]]
    assert points[1]["final"]["wild"]["locality"] == pytest.approx(math.fsum(first_three) / 3)
    assert points[0]["capability"]["exact_match"] == 1.0  # the probe: questions the unedited model answers
    assert points[0]["capability"]["perplexity"] > 1.0
    assert all(len(line) <= 80 for line in curve_lines(points, "wild"))


def test_checkpoints_are_parsed_and_the_last_edit_is_always_one():
    assert parse_checkpoints("100, 1,10") == (1, 10, 100)
    for bad in ("", "0", "1,x", "-5"):
        with pytest.raises(WildInputError, match="--wild-checkpoints"):
            parse_checkpoints(bad)
    assert checkpoints_for(50, (1, 10, 100, 1000)) == [1, 10, 50]
    assert checkpoints_for(1000, (1, 10, 100, 1000)) == [1, 10, 100, 1000]


def test_perplexity_is_exp_of_the_mean_token_loss():
    from pytest_wild.model import load_model

    loaded = load_model(None, "cpu")
    lines = ["Q: Where was Kalo Venbri born? A: Dorwyn.", "Kalo Venbri was born in Dorwyn."]
    ids = [loaded.tokenizer(line, return_tensors="pt")["input_ids"] for line in lines]
    with torch.no_grad():
        losses = [loaded.model(input_ids=i, labels=i).loss.double() * (i.shape[1] - 1) for i in ids]
    expected = math.exp(float(sum(losses)) / sum(i.shape[1] - 1 for i in ids))
    assert perplexity(loaded.model, loaded.tokenizer, lines) == pytest.approx(expected, rel=1e-5)
