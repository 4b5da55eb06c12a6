"""The lines pytest's header shows for a WILD run: what runs (editor, model, suite, modes,
metric, shard), on which devices, the cache, what a named model's weights are, how many
targets the published stop rule cannot reach, the judge, --wild-last-missed, a shadowed plugin
editor and the hyperparameter notes."""

from __future__ import annotations

import pytest


def header_lines(config: pytest.Config, run) -> list[str]:
    """The run's configuration, devices, and what the user should know before it starts."""
    from ..editors import shadowed
    from ..model.devices import header_devices

    o = run.options
    shard = f" shard={o.shard[0]}/{o.shard[1]}" if o.shard else ""
    lines = [f"wild: editor={o.editor} model={o.model or 'tinyworld'} suite={o.suite or 'tinyworld'} "
             f"eval={','.join(o.mode_labels)} metric={o.metric} dtype={o.dtype} batch={o.batch_size}{shard}",
             f"wild devices: {header_devices(config, o)}"]
    lines += [f"wild cache: {run.cache_note}"] if run.cache_note else []
    lines += _weights_line(o.model, run.context)
    lines += _inner_stop_line(run)
    if o.judge is not None:
        at_once = "" if o.judge.local else f"{o.judge.concurrency} requests at once, "
        lines.append(f"wild judge: {o.judge.name}, prompt {o.judge.grader.version}, {at_once}verdicts cached in "
                     f"{o.judge.cache}; each case's test reads exact match, the judge grades every answer at the end")
    if o.last_missed:
        lines.append(f"wild last-missed: {_last_missed_note(config, o)}")
    lines += [f"wild editor: {o.editor} of {entry.origin} ({entry.target}) {entry.problem}"
              for entry in shadowed(o.editor)]
    lines += [f"wild hparams: {note}" for note in (run.runtime.hparams_notes if run.runtime else [])]
    return lines


def _last_missed_note(config: pytest.Config, options) -> str:
    from ..results.missed import configuration, recall

    missed = recall(config.cache, options)
    if missed:
        return f"rerunning the {len(missed)} edits the last run missed ({configuration(options)})"
    what = "no missed edits" if missed == [] else "no earlier run"
    return f"{what} recorded for {configuration(options)}: running every case, as --lf does"


def _weights_line(model: str | None, context: str) -> list[str]:
    """What a named model's weights are, and the context it is asked in."""
    from ..model.named import describe_weights

    about = describe_weights(model)
    if not about:
        return []
    return [f"wild model: {model} is {about['weights']}; {about['licence']}; context {context}"]


def _inner_stop_line(run) -> list[str]:
    """How many of the run's targets hold a "." where the published stop rule ends every
    answer: those cases cannot succeed under exact match, whatever the editor does."""
    from ..scores.answers import inner_stops

    if run.suite is None or run.options.stop_rule != "published":
        return []
    targets = [case.target for case in run.suite.cases]
    count = inner_stops(targets, "published")
    return [f"wild suite: {count} of the {len(targets)} targets contain an inner '.', which the published stop rule "
            "never lets an answer reach (flagged inner-stop; see --wild-stop sentence)"] if count else []
