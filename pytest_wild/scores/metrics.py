"""The names of what a run measures, in one place: the evaluation modes and their labels, the
edit metrics every mode reports per case and in aggregate, the three the results table shows,
and the answer scores that decide whether one generated answer matches its target (their
functions live in `scores`, the modes' in `evaluation`)."""

from __future__ import annotations

# How the edited model is asked (`--wild-eval`): answering on its own (the WILD protocol),
# the published "synthetic" metric (teacher-forced, or for GRACE generated for the target's
# length: see GENERATED_SYNTHETIC), or with the answer's length given.
MODES = ("wild", "synthetic", "length")


def mode_label(mode: str, stop_rule: str) -> str:
    """Results under the repaired stop rule never share a name with the published rule's."""
    return f"wild-{stop_rule}" if mode == "wild" and stop_rule != "published" else mode


# `synthetic` is what the paper's code computes for the editor. Its evaluate.py reads GRACE
# (`alg_name == 'GRACE'`, and no other method) by free greedy generation of the target's token
# count (`vanilla_generation=True`), every other method teacher-forced. For these editors the
# teacher-forced reading is reported beside it, under its own name.
GENERATED_SYNTHETIC = ("grace",)
TEACHER_FORCED = "synthetic_tf"


def synthetic_reading(editor: str) -> str:
    """How the paper's code reads `synthetic` for this editor: "generated" or "teacher-forced"."""
    return "generated" if editor in GENERATED_SYNTHETIC else "teacher-forced"


def mode_labels(modes: tuple[str, ...], stop_rule: str, editor: str) -> tuple[str, ...]:
    """Every result a run reports, by name: each mode's, and `synthetic_tf` right after
    `synthetic` where the published synthetic reading is not teacher-forced."""
    labels = []
    for mode in modes:
        labels.append(mode_label(mode, stop_rule))
        if mode == "synthetic" and synthetic_reading(editor) == "generated":
            labels.append(TEACHER_FORCED)
    return tuple(labels)


# Per case and aggregated; gates, thresholds, reports and goldens all use these names.
# `locality` is the published estimator (the first locality question); `locality_all` and
# `locality_em` are ours (evaluation.py says how each is computed).
EDIT_METRICS = ("reliability", "generalization", "locality", "locality_all", "locality_em")

# The paper's main table: one line per mode, these side by side.
TABLE_METRICS = ("reliability", "generalization", "locality")

# Beside exact match (and beside the judge's verdicts), every case of a mode that answers keeps
# the token F1 of the same answers (answers.f1_beside): a real instruct model answers in
# sentences, which exact match reads as 0 even where the target is in them. Under
# `--wild-metric f1` the metrics are F1 already and these are not kept.
F1_BESIDE = tuple(f"{metric}_f1" for metric in TABLE_METRICS)

# How one answer is scored against its target (`--wild-metric`). `judge` is an LLM's verdict,
# given at the end of the run (pytest_wild.judge); until then answers carry exact match.
ANSWER_SCORES = ("em", "f1", "judge")

# Beside the judge's verdicts, in a judge run's aggregates: exact match of the same answers, and
# the judge's verdict on the locality answers (locality itself keeps its token-identity rule).
BESIDE_JUDGE = ("reliability_em", "generalization_em", "locality_judge")

# What the results table shows indented under each metric, in this order, where a run has it.
BESIDE = ("reliability_em", "reliability_f1", "generalization_em", "generalization_f1", "locality_f1",
          "locality_judge")

# What the judge's verdicts decide, so what a gate cannot read while answers are unjudged.
JUDGED_METRICS = ("reliability", "generalization", "locality_judge")

# Every metric a report's aggregates may hold (gates accept each).
REPORTED_METRICS = EDIT_METRICS + BESIDE
