"""A sequence of edits on the bundled model, in process: edits are kept (never restored in
between), each case's row is its score on the final model, and the curve's points are the
means of what the rows carry."""

from __future__ import annotations

import math

import pytest
import torch

from pytest_wild.cases.case import WildInputError
from pytest_wild.cases.suite import BUNDLED_SUITES, load_suite
from pytest_wild.run.options import Options, parse_checkpoints
from pytest_wild.run.runtime import Runtime
from pytest_wild.scores.answers import f1, f1_beside
from pytest_wild.scores.record import CaseResult
from pytest_wild.sequence.sequential import checkpoints_for, curve, curve_lines, perplexity


def make_runtime(editor: str, cases: int, run_dir=None, perplexity: bool = True, **given) -> Runtime:
    suite = load_suite(BUNDLED_SUITES / "tinyworld-sequential.yaml", limit=cases)
    if not perplexity:
        suite.perplexity_text = None  # 2,160 lines scored at every checkpoint: not what the test is about
    options = Options(editor=editor, model=None, suite=None, limit=cases, modes=("wild",), context=None, metric="em",
                      hparams_file=None, device="cpu", dtype="float32", stop_rule="published", sequential=cases,
                      checkpoints=(1, 3), run_dir=run_dir, **given)
    runtime = Runtime(options, suite)
    runtime.plan_sequence(suite.cases)
    return runtime


@pytest.fixture(scope="module")
def sequence_run(tmp_path_factory):
    """Five FT-M edits, with a run directory (a snapshot every 2 edits and at checkpoints)."""
    run_dir = tmp_path_factory.mktemp("run")
    runtime = make_runtime("ft-m", 5, run_dir, save_every=2)
    runtime.open_run_directory({})
    original = {name: p.detach().clone() for name, p in runtime.loaded.model.named_parameters()}
    rows = [runtime.evaluate(case) for case in runtime.suite.cases]
    return runtime, rows, original


def test_the_edits_are_kept_to_the_end_then_the_model_is_restored(sequence_run):
    """Each row is its case's score on the model with all five edits (the last snapshot's
    tensors); after the sequence the model is the unedited one again, bit for bit."""
    runtime, rows, original = sequence_run
    model = runtime.loaded.model
    assert all(torch.equal(p, original[name]) for name, p in model.named_parameters())
    saved, weights, state = runtime.run_directory.sequence("sequence").latest()
    assert saved["done"] == 5 and state == {}
    assert weights and all(not torch.equal(value, original[name]) for name, value in weights.items())
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
        again = runtime.evaluator.rows_now(runtime.suite.cases)
        for name in weights:
            params[name].copy_(original[name])
    assert [row.modes for row in again] == [row.modes for row in rows]
    assert [row.sequence["position"] for row in rows] == [1, 2, 3, 4, 5]
    assert all(set(row.sequence["checkpoints"]) == {str(c) for c in (1, 3, 5) if c >= row.sequence["position"]}
               for row in rows)
    assert all(row.timing["edit_seconds"] > 0 for row in rows)


class Killed(Exception):
    pass


@pytest.mark.parametrize("editor", ["alphaedit", "ultraedit"])
def test_a_sequence_stopped_midway_resumes_to_the_same_rows_with_its_editor_state(tmp_path, editor):
    """AlphaEdit carries its preserved keys from edit to edit, UltraEdit its running
    statistics: a sequence stopped after its third edit (the snapshot at checkpoint 3) and
    resumed from the run directory ends with the rows of an uninterrupted one, and the state
    it saved is what the editor had."""
    whole = make_runtime(editor, 5, perplexity=False)
    expected = [whole.evaluate(case) for case in whole.suite.cases]

    stopped = make_runtime(editor, 5, tmp_path, perplexity=False, save_every=100)
    stopped.open_run_directory({})
    apply_edit, edits = stopped.apply_edit, []

    def dies_at_the_fourth_edit(cases):
        if len(edits) == 3:
            raise Killed
        edits.append(cases)
        return apply_edit(cases)

    stopped.apply_edit = dies_at_the_fourth_edit
    with pytest.raises(Killed):
        stopped.evaluate(stopped.suite.cases[0])
    saved, _, state = stopped.run_directory.sequence("sequence").latest()
    assert saved["done"] == 3 and state and all(key.startswith(f"{editor}/") for key in state)

    resumed = make_runtime(editor, 5, tmp_path, perplexity=False, save_every=100, resume=True)
    rows = [resumed.evaluate(case) for case in resumed.suite.cases]
    for row in expected + rows:
        row.timing = None
    assert rows == expected


def test_a_memory_editor_resumed_after_its_last_edit_answers_from_its_loaded_memory(tmp_path):
    """GRACE changes no weight: a sequence resumed from the snapshot of its last edit must put
    the saved codebook back on the model (`Editor.resume`) before it scores the edits, and take
    it off when the sequence ends."""
    from pytest_wild.model.reading import readers

    whole = make_runtime("grace", 3, tmp_path, perplexity=False)
    whole.open_run_directory({})
    expected = [whole.evaluate(case) for case in whole.suite.cases]
    saved, weights, state = whole.run_directory.sequence("sequence").latest()
    assert saved["done"] == 3 and weights == {} and state["grace/keys"].shape[0] == 3
    assert readers(whole.loaded.model) == []
    assert [row.modes["wild"]["reliability"] for row in expected] == [1.0, 1.0, 1.0]

    resumed = make_runtime("grace", 3, tmp_path, perplexity=False, resume=True)
    rows = [resumed.evaluate(case) for case in resumed.suite.cases]
    for row in expected + rows:
        row.timing = None
    assert rows == expected and readers(resumed.loaded.model) == []


def test_orders_are_seeded_permutations_of_the_same_edits_and_their_curve_has_a_spread():
    runtime = make_runtime("ft-m", 6, orders=3)
    runtime.plan_sequence(runtime.suite.cases)
    orders = runtime.sequences
    assert sorted(orders) == [1, 2, 3]
    assert all(sorted(c.id for c in cases) == sorted(c.id for c in runtime.suite.cases) for cases in orders.values())
    assert len({tuple(c.id for c in cases) for cases in orders.values()}) == 3
    again = make_runtime("ft-m", 6, orders=3)
    again.plan_sequence(again.suite.cases)
    assert [[c.id for c in again.sequences[k]] for k in (1, 2, 3)] == [[c.id for c in orders[k]] for k in (1, 2, 3)]

    def row(order, position, reliability):
        scores = {"wild": {"reliability": reliability, "generalization": None, "locality": 1.0}}
        return CaseResult(id=f"c{position}@order-{order}", source=None, prompt="Q?", target="a", subject=None,
                          rephrase=None, flags=[], sequence={
                              "order": order, "position": position, "immediate": scores, "checkpoints": {"1": scores},
                              "capability": {"1": {"questions": 4, "exact_match": 0.5 + order / 10}}})

    points = curve([row(1, 1, 1.0), row(2, 1, 0.0), row(3, 1, 1.0)])
    assert points[0]["orders"] == 3 and points[0]["final"]["wild"]["reliability"] == pytest.approx(2 / 3)
    assert points[0]["spread"]["final"]["wild"]["reliability"] == {"sd": pytest.approx(math.sqrt(1 / 3)), "min": 0.0,
                                                                   "max": 1.0}
    assert points[0]["final"]["wild"]["generalization"] is None
    assert points[0]["capability"] == {"questions": 4, "exact_match": pytest.approx(0.7)}
    lines = curve_lines(points, "wild")
    assert "mean ± sd over 3 seeded orders of the same edits" in lines
    assert "0.67±0.58" in lines[-2] and "0.70±0.10" in lines[-2]
    assert all(len(line) <= 80 for line in lines)


def test_the_curve_is_the_mean_of_what_the_rows_carry(sequence_run):
    _, rows, _ = sequence_run
    points = curve(rows)
    assert [p["edits"] for p in points] == [1, 3, 5]
    last = points[-1]
    final = [row.modes["wild"]["reliability"] for row in rows]
    assert last["final"]["wild"]["reliability"] == pytest.approx(math.fsum(final) / len(final))
    assert points[0]["immediate"]["wild"] == rows[0].sequence["immediate"]["wild"]
    first_three = [row.sequence["checkpoints"]["3"]["wild"]["locality"] for row in rows[:3]]
    assert points[1]["final"]["wild"]["locality"] == pytest.approx(math.fsum(first_three) / 3)
    assert points[0]["capability"]["exact_match"] == 1.0  # the probe: questions the unedited model answers
    assert points[0]["capability"]["perplexity"] > 1.0
    assert all(len(line) <= 80 for line in curve_lines(points, "wild"))


def test_each_checkpoint_keeps_the_token_f1_of_the_same_answers(sequence_run):
    """Beside exact match, the F1 of the answers given at that moment (a real model answers in
    sentences that exact match does not credit): at the last checkpoint, the F1 of the rows'
    own answers; the curve's F1 is their mean."""
    _, rows, _ = sequence_run
    for row in rows:
        answers = row.modes["wild"]["answers"]
        kept = row.sequence["checkpoints"]["5"]["wild"]
        assert kept["reliability_f1"] == f1(answers["prompt"]["after"], row.target)
        assert kept["generalization_f1"] == f1(answers["rephrase"]["after"], row.target)
        first = answers["locality"][0]
        assert kept["locality_f1"] == (1.0 if first["after"] == first["before"] else f1(first["after"], first["before"]))
        assert "answers" not in kept  # answers are kept only for a judge
    last = curve(rows)[-1]["final"]["wild"]
    for metric in ("reliability_f1", "generalization_f1", "locality_f1"):
        values = [row.sequence["checkpoints"]["5"]["wild"][metric] for row in rows]
        assert last[metric] == pytest.approx(math.fsum(values) / len(values))
    lines = curve_lines(curve(rows), "wild")
    shown = [line for line in lines if line.split()[:1] == ["F1"]]
    assert len(shown) == 6 and all(len(line) <= 80 for line in lines)  # under each checkpoint's two conventions
    assert shown[-2].split()[1] == f"{last['reliability_f1']:.3f}"


def test_f1_beside_reads_sentences_and_locality_against_the_answer_before():
    answers = {"prompt": {"after": "The largest fishing port is Grimsby, UK"},
               "locality": [{"before": "Paris.", "after": "paris"}]}
    found = f1_beside(answers, "Grimsby")
    assert found["reliability_f1"] == pytest.approx(2 / 7)  # precision 1/6 (the article dropped), recall 1
    assert found["generalization_f1"] is None and found["locality_f1"] == 1.0
    answers["locality"] = [{"before": "", "after": ""}]
    assert f1_beside(answers, "Grimsby")["locality_f1"] == 1.0  # two silences agree; SQuAD's F1 would read 0
    answers["locality"] = [{"before": "in Paris", "after": "Lyon"}]
    assert f1_beside(answers, "Grimsby")["locality_f1"] == 0.0


def test_checkpoints_are_parsed_and_the_last_edit_is_always_one():
    assert parse_checkpoints("100, 1,10") == (1, 10, 100)
    for bad in ("", "0", "1,x", "-5"):
        with pytest.raises(WildInputError, match="--wild-checkpoints"):
            parse_checkpoints(bad)
    assert checkpoints_for(50, (1, 10, 100, 1000)) == [1, 10, 50]
    assert checkpoints_for(1000, (1, 10, 100, 1000)) == [1, 10, 100, 1000]


def test_perplexity_is_exp_of_the_mean_token_loss():
    from pytest_wild.model.load import load_model

    loaded = load_model(None, "cpu")
    lines = ["Q: Where was Kalo Venbri born? A: Dorwyn.", "Kalo Venbri was born in Dorwyn."]
    ids = [loaded.tokenizer(line, return_tensors="pt")["input_ids"] for line in lines]
    with torch.no_grad():
        losses = [loaded.model(input_ids=i, labels=i).loss.double() * (i.shape[1] - 1) for i in ids]
    expected = math.exp(float(sum(losses)) / sum(i.shape[1] - 1 for i in ids))
    assert perplexity(loaded.model, loaded.tokenizer, lines) == pytest.approx(expected, rel=1e-5)


def test_the_live_line_says_how_far_and_how_fast_at_most_every_ten_seconds(capsys, monkeypatch):
    from types import SimpleNamespace

    from pytest_wild.run import progress
    from pytest_wild.sequence.sequential import _pace

    assert _pace(10, 5.0, 990) == "2.00 edits/s, about 8 min left"
    assert _pace(3, 1.0, 30) == "3.00 edits/s, about 10 s left"
    assert _pace(0, 0.0, 5) == "starting"
    plugins = SimpleNamespace(get_plugin=lambda name: None)  # no terminal reporter: lines go to stderr
    shown = progress.Progress(SimpleNamespace(get_verbosity=lambda: 0, pluginmanager=plugins))
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    shown._last_live = now[0]
    for done in range(1, 7):
        now[0] += 4.0  # at 4, 8, 12, 16, 20, 24 s: a line at 12 s and at 24 s
        shown.live(f"{done} of 9 edits")
    assert capsys.readouterr().err.splitlines() == ["wild: 3 of 9 edits", "wild: 6 of 9 edits"]


def test_the_pace_is_estimated_from_the_edits_after_the_first_which_pays_the_one_time_costs():
    """A first update that takes long (statistics, templates) is said as such; the estimate
    after it counts only the edits that followed, so it does not read hours for minutes."""
    import time

    lines = []

    from pytest_wild.run.progress import Silent

    class Lines(Silent):
        def live(self, text):
            lines.append(text)

    runtime = make_runtime("ft-m", 4, perplexity=False)
    runtime.progress = Lines()
    edit = runtime.apply_edit
    calls = []

    def first_slow(batch):
        calls.append(batch)
        if len(calls) == 1:
            time.sleep(3.0)
        return edit(batch)

    runtime.apply_edit = first_slow
    runtime.evaluate(runtime.suite.cases[0])
    assert len(lines) == 4, lines
    assert lines[0].startswith("1 of 4 edits, the first in ") and "one-time costs" in lines[0]
    seconds = float(lines[0].split("the first in ")[1].split(" s ")[0])
    assert seconds >= 3.0
    left = [float(line.split("about ")[1].split(" s left")[0]) for line in lines[1:] if " s left" in line]
    assert len(left) == 3 and left[-1] == 0 and left[0] < 3.0 * 3, lines


def test_a_curve_over_checkpoints_recorded_before_f1_was_kept_has_no_f1_mean():
    """A run directory from before F1 was kept, resumed: its early entries lack F1, so a mean of
    the later ones alone would pass for the whole sequence's."""
    from pytest_wild.sequence.sequential import _means

    old = {"wild": {"reliability": 0.0, "generalization": 0.0, "locality": 1.0}}
    new = {"wild": {"reliability": 0.0, "generalization": None, "locality": 1.0, "reliability_f1": 0.5,
                    "generalization_f1": None, "locality_f1": 1.0}}
    assert "reliability_f1" not in _means([old, new])["wild"]
    assert _means([new, new])["wild"]["reliability_f1"] == 0.5
    assert _means([new])["wild"].get("generalization_f1") is None  # no rephrase: no value, as for EM
