"""What the controller learns about a run: each case's row, the cases lost, how many were
selected, what stopped the session, and what the end of the run computed. Rows travel from
the process that ran a case (this one, or an xdist worker) inside its test report; what a
worker learnt about its model travels once, in its `workeroutput`, published and merged here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..run.sigterm import SIGTERM_REASON
from ..scores.record import CaseResult
from .report import unevaluable

ROW_PROPERTY = "pytest_wild_row"  # the user_properties key a case's row rides under
STOPPED_PROPERTY = "pytest_wild_sequence_stopped"  # ... and where a sequence stopped before its end (SIGTERM)
WORKER_OUTPUT_KEY = "pytest_wild"  # the key of what a worker hands back in `workeroutput`


@dataclass
class Outcome:
    """What the end of the run computed (pytest_wild.run.finish)."""

    aggregates: dict  # mode -> metric -> aggregate cell
    gates: list[dict]  # one verdict per --wild-gate rule
    written: dict[str, Path]  # what was written where, for the summary
    curve: list[dict] = field(default_factory=list)  # a sequence's curve (pytest_wild.sequence.sequential.curve)
    timing: dict = field(default_factory=dict)  # seconds per edit and per question (report.timing_summary)
    judge: dict | None = None  # the judge's verdicts in numbers (judge.grading.judge_section)
    unwritten: list[str] = field(default_factory=list)  # outputs that could not be written, and why

    @property
    def gate_failed(self) -> bool:
        return any(not gate["passed"] for gate in self.gates)

    @property
    def failed(self) -> bool:
        """A gate failed, or an output could not be written: the run fails."""
        return self.gate_failed or bool(self.unwritten)


@dataclass
class Results:
    """One per process; on the controller it gathers every case's row."""

    rows: list[CaseResult] = field(default_factory=list)  # one per case that finished with a result
    lost: list[str] = field(default_factory=list)  # node ids of cases that failed without one
    sequences_stopped: list[str] = field(default_factory=list)  # where each sequence stopped short, and why
    selected: int | None = None  # cases this run (this shard) selected
    selected_before_sharding: int | None = None  # the whole run's, for merge-reports
    dropped: int | None = None  # cases --wild-only-failed dropped
    model_info: dict = field(default_factory=dict)  # spec, profile, fingerprint, dtype, architecture
    suite_info: dict | None = None  # name, source, size and sampling of the suite
    stop_reason: str | None = None  # what stopped the session early, if anything
    fatal: str | None = None  # why the model could not be loaded where the cases run
    outcome: Outcome | None = None  # set once, at the end of the run

    @property
    def not_evaluable(self) -> dict[str, str]:
        """Case id -> why the case does not fit the model window."""
        return unevaluable(self.rows)

    @property
    def cases_run(self) -> int:
        """Cases that finished, with a result or reported lost."""
        return len(self.rows) + len(self.lost)

    @property
    def complete(self) -> bool:
        """Nothing stopped the session early and every selected case finished: only then may
        the report take the place of an earlier one."""
        return self.stop_reason is None and self.selected is not None and self.cases_run == self.selected

    def describe_suite(self, suite) -> None:
        self.suite_info = {"name": suite.name, "source": suite.source, "cases": len(suite.cases),
                           "seed": suite.seed, "limit": suite.limit,
                           "sampling": suite.sampling if suite.limit is not None else "all"}

    def describe_model(self, info: dict) -> None:
        self.model_info = info

    def select(self, selected: int, before_sharding: int | None = None) -> None:
        self.selected = selected
        if before_sharding is not None:
            self.selected_before_sharding = before_sharding

    def drop(self, count: int) -> None:
        self.dropped = count

    def stop(self, reason: str) -> None:
        """The session stops early (SIGTERM, Ctrl-C, -x): the report must not look complete."""
        self.stop_reason = reason

    def terminated(self) -> str | None:
        """Why the run is asked to stop at once (SIGTERM), or None: what is left to do (a
        sequence's next edit, the judging) is not begun."""
        return self.stop_reason if self.stop_reason == SIGTERM_REASON else None

    def fail(self, reason: str) -> None:
        """The model could not be loaded: no case runs."""
        self.fatal = reason

    def conclude(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def record(self, report: pytest.TestReport) -> None:
        """Take a case's row out of its report (before junitxml sees it; the flat metric
        properties stay for `--junitxml`), or note the case lost when it failed without one."""
        rows = [CaseResult.from_json(value) for key, value in report.user_properties if key == ROW_PROPERTY]
        self.sequences_stopped += [value for key, value in report.user_properties if key == STOPPED_PROPERTY]
        report.user_properties[:] = [(k, v) for k, v in report.user_properties if k not in (ROW_PROPERTY, STOPPED_PROPERTY)]
        if rows and report.when == "call":
            self.rows.extend(rows)
        elif report.failed and not rows and report.nodeid not in self.lost:
            self.lost.append(report.nodeid)

    def publish(self, workeroutput: dict) -> None:
        """On an xdist worker: what the controller cannot learn from the test reports."""
        workeroutput[WORKER_OUTPUT_KEY] = {"model": self.model_info, "dropped": self.dropped,
                                           "suite": self.suite_info, "fatal": self.fatal,
                                           "selected_before_sharding": self.selected_before_sharding}

    def merge_worker(self, node) -> None:
        """On the controller: what a finished worker published (nothing if it crashed)."""
        output = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
        if not output:
            return
        self.model_info = self.model_info or output["model"]
        self.suite_info = self.suite_info or output["suite"]
        self.selected_before_sharding = output["selected_before_sharding"]
        self.fatal = self.fatal or output["fatal"]
        if output["dropped"] is not None:
            self.dropped = output["dropped"]


class ResultsListener:
    """Collects per-case rows on the controller, from this process or from xdist workers."""

    def __init__(self, results: Results) -> None:
        self.results = results

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """A case's row, out of its report."""
        self.results.record(report)

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo) -> None:
        """Ctrl-C, SIGTERM, pytest.exit, xdist's -x, collection errors: pytest still calls
        sessionfinish after them, and the report it writes must not look complete."""
        self.results.stop(str(excinfo.value) or excinfo.typename)


class WorkerListener:
    """On the xdist controller: devices for the workers, and what each worker learnt."""

    def __init__(self, results: Results, options) -> None:
        self.results, self.options = results, options

    def pytest_configure_node(self, node) -> None:
        """Give each worker its device (or device group), round-robin by worker number, so a
        replacement worker (gw4 after gw0 died) lands on a device as well, and the test ids
        given on the command line."""
        from ..model.devices import device_for_worker

        node.workerinput["wild_device"] = device_for_worker(node.gateway.id, self.options)
        node.workerinput["wild_case_ids"] = list(self.options.case_ids)

    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        """Every worker collects (and selects) the same cases; the controller does not."""
        self.results.select(len(ids))

    def pytest_testnodedown(self, node, error) -> None:
        self.results.merge_worker(node)
