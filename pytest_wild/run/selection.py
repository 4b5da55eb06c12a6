"""Which cases this process runs, after -k and marks: the test ids given on the command line,
`--wild-last-missed`, `--wild-only-failed`, the edit batches and this shard's share of them,
and a sequence's cases in suite order (whatever order `-p randomly` put the tests in)."""

from __future__ import annotations

import pytest

from ..cases.case import WildInputError
from .collect import WildItem


def select(config: pytest.Config, run, items: list) -> None:
    """Keep the test ids given on the command line, drop what --wild-only-failed drops, plan
    the edit batches, keep this shard's batches (and a sequence's cases); `items` is changed
    in place and what leaves it is reported deselected, as pytest's own selections are."""
    _keep_given_ids(config, items, run.options.case_ids)
    if run.options.conformance:
        return
    if run.options.last_missed:
        _keep_last_missed(config, items, run.options)
    wild_items = [item for item in items if isinstance(item, WildItem)]
    dropped = _answered_already(run) if run.options.only_failed else set()
    run.runtime.plan_batches(dropped)
    shard = run.options.shard
    deselected = [item for item in wild_items if item.case.id in dropped
                  or (shard and run.runtime.batch_of[item.case.id] % shard[1] != shard[0] - 1)]
    if run.options.sequential:
        deselected += _outside_the_sequence(run, [item for item in wild_items if item not in deselected])
    run.results.select(len(wild_items) - len(deselected),
                       before_sharding=sum(1 for item in wild_items if item.case.id not in dropped))
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        gone = set(map(id, deselected))
        items[:] = [item for item in items if id(item) not in gone]


def _outside_the_sequence(run, items: list) -> list:
    """--wild-sequential N: the first N selected cases in suite order (whatever order -p
    randomly put the tests in) form the sequence; the items of the other cases are returned
    to be deselected. With --wild-orders, a case is in the sequence when any of its orders'
    items is selected."""
    order = {case.id: index for index, case in enumerate(run.suite.cases)}
    wanted = run.options.sequential
    cases = sorted({item.case.id: item.case for item in items}.values(), key=lambda case: order[case.id])
    if len(cases) < wanted:
        raise pytest.UsageError(f"--wild-sequential {wanted}: the run has only {len(cases)} cases to edit "
                                f"(suite {run.suite.name}, after -k and the other selections)")
    chosen = {case.id for case in cases[:wanted]}
    run.runtime.plan_sequence(cases[:wanted])
    return [item for item in items if item.case.id not in chosen]


def _keep_given_ids(config: pytest.Config, items: list, given: tuple[str, ...]) -> None:
    """Test ids on the command line (as `-v` prints them) select those cases; pytest itself
    cannot, since under --wild the rootdir, not those paths, is collected."""
    if not given:
        return
    found = {item.nodeid for item in items}
    unknown = [nodeid for nodeid in given if nodeid not in found]
    if unknown:
        raise pytest.UsageError(f"{unknown[0]}: no such test in this run (ids look like {items[0].nodeid})"
                                if items else f"{unknown[0]}: no such test in this run")
    others = [item for item in items if item.nodeid not in given]
    if others:
        config.hook.pytest_deselected(items=others)
        items[:] = [item for item in items if item.nodeid in given]


def _keep_last_missed(config: pytest.Config, items: list, options) -> None:
    """--wild-last-missed: the cases the last runs of this configuration missed, read from
    pytest's cache on every process that collects (each xdist worker selects the same);
    every case when none were recorded, as --lf does."""
    from ..results.missed import recall

    missed = set(recall(config.cache, options) or ())
    if not missed:
        return
    others = [item for item in items if isinstance(item, WildItem) and item.case.id not in missed]
    if others:
        config.hook.pytest_deselected(items=others)
        gone = set(map(id, others))
        items[:] = [item for item in items if id(item) not in gone]


def _answered_already(run) -> set[str]:
    """Ids of the suite's cases whose unedited WILD answer already matches the target
    (all of the suite, not only the selected cases, so batches do not depend on -k)."""
    from ..scores.answers import SCORES

    cases = run.suite.cases
    try:
        before = run.runtime.evaluator.answers_before([case.prompt for case in cases])
    except WildInputError as exc:
        raise pytest.UsageError(str(exc)) from None
    score = SCORES[run.options.metric]
    answered = {case.id for case, gen in zip(cases, before) if score(gen.text, case.target) >= 1.0}
    run.results.drop(len(answered))
    return answered
