"""Collection under --wild: the suite instead of the project's tests, one test per case
(named by the case's id: `tinyworld.yaml::tw-0042`), and the inputs those tests need read and checked first."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..cases.case import Case, WildInputError, item_name
from ..results.gathered import ROW_PROPERTY, STOPPED_PROPERTY
from ..scores.metrics import EDIT_METRICS
from ..sequence.sequential import SequenceNotRun, SequenceStopped

RUN_KEY = pytest.StashKey["WildRun"]()  # the run, in the config's stash


def load_inputs(config: pytest.Config, run) -> None:
    """Every input of the run, read and checked: the suite and its data, the model's files,
    the hyperparameters against the model, the golden directory, the output paths. On the
    controller at configure time, before any xdist worker starts, so a bad input ends the
    run with its one line and exit status 4 (a usage error) whether the run is serial or
    not; a worker repeats it at collection."""
    from ..cases.suite import find_suite, load_suite
    from ..results.golden import check_golden_directory, goldens_on

    o = run.options
    found = find_suite(o.suite, config.rootpath, config.invocation_params.dir)
    run.use_suite(found, load_suite(found, o.limit, o.sampling, config.rootpath, o.data_dir))
    if o.system_prompt is not None and run.context != "chat":
        raise WildInputError(f"--wild-system-prompt: only with --wild-context chat (this run's context is {run.context})")
    run.runtime.resolved_hparams()  # built now, so a value the model cannot take fails here
    goldens = goldens_on(config) and not o.conformance
    if goldens:
        check_golden_directory()
    _check_outputs(run, goldens)
    if o.run_dir is not None and not hasattr(config, "workerinput"):  # written only once every output is known good
        run.runtime.open_run_directory(_selection(config, o.case_ids))
    if o.judge is not None and not hasattr(config, "workerinput"):
        _check_judge(o)


def _check_judge(o) -> None:
    """What the judge needs, checked before the first edit though the judge grades only at
    the end of the run (on this process): a local judge's files, as --wild-model's are, and
    the verdict cache, opened once."""
    from ..judge.cache import VerdictCache
    from ..judge.settings import as_judge
    from ..model.load import check_model

    if o.judge.local is not None:
        try:
            check_model(o.judge.local, o.trust_remote_code)
        except WildInputError as exc:
            raise WildInputError(as_judge(str(exc), o.judge.target)) from None
    VerdictCache(o.judge.cache).close()


def _selection(config: pytest.Config, case_ids: tuple[str, ...]) -> dict:
    """What chooses the sequence's cases besides the suite: -k, -m and test ids."""
    return {"keyword": config.option.keyword or "", "markers": config.option.markexpr or "", "ids": sorted(case_ids)}


def _check_outputs(run, goldens: bool) -> None:
    """The report and Markdown paths, against each other, the run's input files and the
    goldens, and for writability, before anything is edited."""
    from ..results.golden import WildGoldenExtension
    from ..results.outputs import check_outputs

    suite = run.suite
    inputs = [path for path in (suite.path, Path(suite.source), run.options.hparams_file)
              if path is not None and path.is_file()]
    root = WildGoldenExtension.settings.root if goldens and WildGoldenExtension.settings else None
    o = run.options
    run_dir = ("--wild-resume" if o.resume else "--wild-run-dir", o.run_dir) if o.run_dir is not None else None
    check_outputs({"--wild-report": o.report, "--wild-markdown": o.markdown, "--wild-plot": o.plot}, inputs, root,
                  run_dir)


class InputErrorsInOneLine:
    """Bad data or suite files fail collection with their one-line message, no traceback."""

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, WildInputError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class WildRoot(InputErrorsInOneLine, pytest.Directory):
    """Under --wild the root collects the suite and nothing else."""

    def collect(self):
        run = self.config.stash[RUN_KEY]
        if run.suite is None:  # an xdist worker: the controller checked the inputs already
            load_inputs(self.config, run)
        found = run.found
        path = found if isinstance(found, Path) else self.config.rootpath
        try:
            nodeid = str(path.relative_to(self.config.rootpath)) if isinstance(found, Path) else None
        except ValueError:
            nodeid = None
        name = path.name if isinstance(found, Path) else found
        if run.options.conformance:
            from ..editors.conformance import ConformanceChecks

            name = f"conformance-{run.options.editor}"
            yield ConformanceChecks.from_parent(self, path=path, name=name, nodeid=name, runtime=run.runtime)
            return
        yield WildSuite.from_parent(self, path=path, name=name, nodeid=nodeid or name)


class WildSuite(InputErrorsInOneLine, pytest.File):
    """One suite: one test per case."""

    def collect(self):
        from ..results.golden import goldens_on

        run = self.config.stash[RUN_KEY]
        goldens = goldens_on(self.config)
        for order in range(1, run.options.orders + 1) if run.options.orders else [None]:
            suffix = "" if order is None else f"@order-{order}"
            for case in run.suite.cases:
                yield WildItem.from_parent(self, name=item_name(case.id) + suffix, callobj=_case_test(case, order, goldens),
                                           case=case, order=order)


class WildItem(pytest.Function):
    """One case's test; with --wild-orders, the case in one order of the sequence (`tw-0042@order-2`)."""

    def __init__(self, *, case: Case, order: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.case, self.order = case, order
        self.add_marker("wild")

    def reportinfo(self):
        """Only the test's own name as its domain, so `-v` prints the id exactly as it can be
        pasted back (pytest turns dots in a domain into '::': "tinyworld::yaml::tw-0042")."""
        return self.path, None, self.name


def _case_test(case: Case, order: int | None, goldens: bool):
    """The test of one case. It fails on what a CI must catch: a changed generation (its
    golden) or a per-case threshold the user set. An edit that simply did not work is the
    method's result, not a broken test: it is an expected failure (`x`; `-rx` lists each with
    what was asked and generated), and gates on the aggregates decide the exit status. It
    asks for syrupy's `snapshot` only when syrupy is loaded (with `-p no:syrupy` the run goes
    on without goldens, and the summary says so)."""
    def test_edit(wild_run, request) -> None:
        snapshot = request.getfixturevalue("snapshot") if goldens else None
        runtime = wild_run.runtime
        unwritable = None
        try:
            row = runtime.evaluate(case, order)
        except SequenceStopped as exc:  # the session stops after this test: it ran no case
            if not isinstance(exc, SequenceNotRun):  # said once, by the test where it stopped
                request.node.user_properties.append((STOPPED_PROPERTY, str(exc)))
            pytest.skip(str(exc))
        except OSError as exc:  # a snapshot or a cache on a full or read-only disk: what was written before stays whole
            unwritable = f"{case.id}: cannot write{f' {exc.filename}' if exc.filename else ''} " \
                         f"({exc.strerror or type(exc).__name__})"
        if unwritable:
            pytest.fail(unwritable, pytrace=False)  # out of the except block: one line, no chained traceback
        request.node.user_properties.append((ROW_PROPERTY, row.to_json()))  # plain JSON: it may cross to the xdist controller
        if row.not_evaluable:
            pytest.skip(f"{case.id} not evaluable: {row.not_evaluable}")
        for mode, scores in row.modes.items():
            for metric in EDIT_METRICS:
                if scores.get(metric) is not None:
                    request.node.user_properties.append((f"wild.{mode}.{metric}", scores[metric]))
        failures = runtime.failures(row)
        if snapshot is not None:
            from ..results.golden import check_golden

            failures += check_golden(snapshot, row, wild_run)  # after the thresholds; both reported
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)
        misses = runtime.misses(row)
        if misses:
            pytest.xfail("\n".join(misses))

    return test_edit
