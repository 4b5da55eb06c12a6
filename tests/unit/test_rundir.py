"""The run directory a sequence keeps its progress in: snapshots are whole or absent, a
resumed run must be the recorded one, and a directory that is not what we wrote (corrupt,
links) is one line naming the file."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from pytest_wild.cases.case import WildInputError
from pytest_wild.editors.api import EditHandle, EditorState
from pytest_wild.editors.locate.alphaedit import PreservedKeys
from pytest_wild.sequence.rundir import RunDirectory, first_difference

IDENTITY = {"editor": "memit", "hparams": {"layers": [3, 4], "lr": 0.5}, "sequence": {"edits": 10}}


def saved_run(tmp_path, done=4):
    run = RunDirectory(tmp_path / "run", "--wild-run-dir")
    run.create(IDENTITY)
    store = run.sequence("sequence")
    store.save(done, {"done": done, "model": "abc"}, {"w": torch.arange(6.0).reshape(2, 3)},
               {"alphaedit/layer.3": torch.eye(2)})
    return run, store


def test_a_snapshot_reads_back_exactly_and_only_the_latest_is_kept(tmp_path):
    run, store = saved_run(tmp_path)
    weights = {"w": torch.randn(3, 3, dtype=torch.float64)}
    store.save(6, {"done": 6}, weights, {})
    progress, read, state = store.latest()
    assert progress == {"done": 6} and torch.equal(read["w"], weights["w"]) and state == {}
    assert sorted(p.name for p in store.path.iterdir()) == ["latest.json", "snapshot-000006"]


def test_what_a_killed_save_leaves_behind_is_ignored_and_cleared(tmp_path):
    """A run killed while saving leaves a temporary directory, or a snapshot that
    latest.json does not name yet: the named snapshot is read, and the next save clears both."""
    run, store = saved_run(tmp_path)
    (store.path / ".snapshot-000006.123.tmp").mkdir()
    (store.path / "snapshot-000006").mkdir()
    assert store.latest()[0] == {"done": 4, "model": "abc"}
    store.save(5, {"done": 5}, {}, {})
    assert sorted(p.name for p in store.path.iterdir()) == ["latest.json", "snapshot-000005"]


def test_resuming_another_run_names_the_first_difference(tmp_path):
    run, _ = saved_run(tmp_path)
    resumed = RunDirectory(run.path, "--wild-resume")
    resumed.check(json.loads(json.dumps(IDENTITY)))
    changed = {**IDENTITY, "hparams": {"layers": [3, 5], "lr": 0.5}}
    with pytest.raises(WildInputError, match=r"^--wild-resume .*run: the run there differs from this one: "
                                             r"hparams\.layers: \[3, 4\] there, \[3, 5\] here$"):
        resumed.check(changed)
    assert first_difference({"a": 1}, {"a": 1, "b": None}) is None
    with pytest.raises(WildInputError, match="already holds a run; continue it with --wild-resume"):
        RunDirectory(run.path, "--wild-run-dir").create(IDENTITY)


@pytest.mark.parametrize("damage, message", [
    (lambda s: (s.run.path / "run.json").write_text("{not json"), "run.json is corrupt"),
    (lambda s: (s.run.path / "run.json").unlink(), "no run.json (not a pytest-wild run directory)"),
    (lambda s: (s.path / "latest.json").write_text('{"snapshot": "../../etc"}'), "latest.json is corrupt"),
    (lambda s: (s.path / "snapshot-000004" / "weights.safetensors").write_bytes(b"\x00" * 20),
     "snapshot-000004/weights.safetensors is corrupt"),
    (lambda s: (s.path / "snapshot-000004" / "state.safetensors").unlink(), "state.safetensors is missing"),
    (lambda s: (s.path / "snapshot-000004" / "progress.json").write_text("[]"), "progress.json is corrupt"),
    (lambda s: _link(s.path / "snapshot-000004" / "progress.json"), "progress.json is a link"),
], ids=["run.json not JSON", "no run.json", "latest.json names a path", "weights not safetensors",
        "state missing", "progress not an object", "progress a link"])
def test_a_damaged_run_directory_is_one_line_naming_the_file(tmp_path, damage, message):
    run, store = saved_run(tmp_path)
    damage(store)
    resumed = RunDirectory(run.path, "--wild-resume")
    with pytest.raises(WildInputError, match=re.escape(message)) as raised:
        resumed.check(IDENTITY)
        resumed.sequence("sequence").latest()
    assert "\n" not in str(raised.value) and str(raised.value).startswith(f"--wild-resume {run.path}: ")


def _link(path):
    """Replace `path` by a link to a file outside the run directory."""
    outside = path.parents[3] / "secret.json"
    outside.write_text('{"done": 4}')
    path.unlink()
    os.symlink(outside, path)


def test_editor_state_is_saved_by_part_and_given_back_when_the_editor_asks():
    """AlphaEdit's preserved keys as tensors named `alphaedit/<module>`, and back."""
    model = torch.nn.Linear(2, 2)
    state = EditorState()
    keys = state.part("alphaedit", PreservedKeys)
    keys.add("layer.3", torch.ones(2, 1), torch.float32, EditHandle(model))
    saved = state.state_dict()
    assert list(saved) == ["alphaedit/layer.3"] and torch.equal(saved["alphaedit/layer.3"], torch.ones(2, 2))
    again = EditorState()
    again.load_state_dict(saved)
    assert again.state_dict().keys() == saved.keys()  # kept as saved until the editor asks for its part
    assert torch.equal(again.part("alphaedit", PreservedKeys).c_prev["layer.3"], torch.ones(2, 2))
    state.part("opaque", object)
    with pytest.raises(TypeError, match="state part 'opaque' cannot be saved"):
        state.state_dict()


def test_the_curve_is_drawn_as_png_and_svg(tmp_path):
    pytest.importorskip("matplotlib")
    from pytest_wild.sequence.plot import plot_curve

    def point(edits, value):
        scores = {"wild": {"reliability": value, "generalization": value / 2, "locality": None},
                  "synthetic": {"reliability": 1.0, "generalization": 1.0, "locality": 1.0}}
        return {"edits": edits, "final": scores, "immediate": scores, "capability": {"exact_match": value}}

    points = [point(1, 1.0), point(10, 0.5), point(100, 0.1)]
    for name in ("curve.png", "curve.svg"):
        plot_curve(points, {"suite": points}, ["wild", "synthetic"], tmp_path / name, "ft-m on tinyworld")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "curve.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.png", "curve.svg"]  # no temporary file left


def test_the_curve_labels_its_log_axis_1_10_100_and_keeps_coinciding_lines_apart():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from pytest_wild.sequence.plot import draw_curve

    scores = {"wild": {"reliability": 1.0, "generalization": 1.0, "locality": 1.0}}
    points = [{"edits": n, "final": scores, "immediate": scores, "capability": {}} for n in (1, 10, 100)]
    figure = draw_curve(points, {"suite": points}, ["wild"], "coinciding")
    try:
        figure.canvas.draw()
        panel = figure.axes[0]
        shown = {label.get_text() for label in panel.get_xticklabels() if label.get_text()}
        assert {"1", "10", "100"} <= shown and not any("^" in text for text in shown), shown
        lines = panel.get_lines()
        assert len({line.get_marker() for line in lines}) == 3  # one shape per metric, all on the same values
        assert len({line.get_markersize() for line in lines}) == 3 and all(line.get_markerfacecolor() == "none" for line in lines)
    finally:
        plt.close(figure)


def test_the_curve_draws_kept_f1_dotted_in_its_metric_colour():
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from pytest_wild.sequence.plot import draw_curve

    scores = {"wild": {"reliability": 0.0, "generalization": 0.0, "locality": 0.5, "reliability_f1": 0.4,
                       "generalization_f1": None, "locality_f1": 0.8}}
    points = [{"edits": n, "final": scores, "immediate": scores, "capability": {}} for n in (1, 10)]
    figure = draw_curve(points, {"suite": points}, ["wild"], "f1")
    try:
        lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
        assert set(lines) == {"reliability (wild)", "generalization (wild)", "locality (wild)",
                              "reliability F1 (wild)", "locality F1 (wild)"}  # no line where no F1 was kept
        assert list(lines["reliability F1 (wild)"].get_ydata()) == [0.4, 0.4]
        assert lines["locality F1 (wild)"].get_color() == lines["locality (wild)"].get_color()
        assert lines["locality F1 (wild)"].get_linestyle() != lines["locality (wild)"].get_linestyle()
    finally:
        plt.close(figure)


def test_a_run_that_never_started_may_be_started_again(tmp_path):
    """A run stopped before its first snapshot (a usage error found after configure) left only
    its run.json: the same run may start there again, another run may not."""
    run = RunDirectory(tmp_path / "run", "--wild-run-dir")
    run.create(IDENTITY)
    run.create(json.loads(json.dumps(IDENTITY)))
    with pytest.raises(WildInputError, match="already holds a run"):
        run.create({**IDENTITY, "editor": "rome"})
    run.sequence("sequence").save(1, {"done": 1}, {}, {})
    with pytest.raises(WildInputError, match="already holds a run"):
        run.create(IDENTITY)
