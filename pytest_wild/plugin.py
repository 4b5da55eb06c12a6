"""The pytest plugin: options, collection of one test per edit case, the per-case test, the
results table, gates and the JSON report.

Loaded in every pytest run of every project that installs pytest-wild, so without `--wild`
it registers its options and does nothing else, and it never imports torch or transformers
at module level.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from .cases import Case, WildInputError
from .contexts import CONTEXTS
from .devices import check_devices
from .outputs import check_cache_root
from .metrics import ANSWER_SCORES, EDIT_METRICS

RUN_KEY = pytest.StashKey["WildRun"]()
OUTPUT_KEY = "pytest_wild"
INPUT_PATH_OPTIONS = ("--wild-suite", "--wild-hparams", "--wild-model")
OUTPUT_PATH_OPTIONS = ("--wild-report", "--wild-markdown")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wild", "WILD evaluation of knowledge edits (pytest-wild)")
    group.addoption("--wild", action="store_true", help="run the WILD suite instead of the project's tests")
    group.addoption("--editor", help="editing method (see `pytest-wild editors`); ini: wild_editor")
    group.addoption("--wild-model", metavar="PATH_OR_ID", help="causal LM: a local directory or hub id (default: bundled tinyworld); ini: wild_model")
    group.addoption("--wild-suite", metavar="NAME_OR_PATH", help="suite name, suite .yaml, QAEdit .json/.jsonl or hub dataset id (default: tinyworld); ini: wild_suite")
    group.addoption("--wild-limit", type=int, metavar="N", help="evaluate N of the suite's cases (see --wild-sampling)")
    group.addoption("--wild-sampling", choices=("seeded", "first"), help="which N cases --wild-limit keeps: a seeded sample, or the first N in file order as the paper's code does (default: the suite's, else seeded)")
    group.addoption("--wild-eval", metavar="MODES", help="comma list of wild, synthetic, length (default: wild); ini: wild_eval")
    group.addoption("--wild-context", choices=CONTEXTS, help="how questions are put: bare, the paper's QA instruction, the paper's fixed Llama-2 chat prompt, or the model's own chat template (default: the suite's, else question)")
    group.addoption("--wild-metric", choices=ANSWER_SCORES, help="answer score (default: em); ini: wild_metric")
    group.addoption("--wild-stop", choices=("published", "sentence"), help="stop rule: the paper's (default) or sentence ends; reported under its own name")
    group.addoption("--wild-hparams", metavar="FILE.yaml", help="editor hyperparameters overriding the defaults (EasyEdit keys accepted)")
    group.addoption("--wild-device", metavar="DEVICE", help="cpu, cuda, cuda:N or auto (default: auto); ini: wild_device")
    group.addoption("--wild-dtype", choices=("float32", "bfloat16", "float16"), help="model dtype (default: float32); ini: wild_dtype")
    group.addoption("--wild-gate", action="append", default=[], metavar="RULE", help='session gate on aggregates, e.g. "reliability>=0.5", "synthetic.reliability>=0.9" (repeatable); ini: wild_gates')
    group.addoption("--wild-threshold", action="append", default=[], metavar="RULE", help='per-case threshold, e.g. "locality>=1" (repeatable; replaces the suite\'s for that metric); ini: wild_thresholds')
    group.addoption("--wild-report", metavar="FILE.json", help="write per-case results, aggregates and configuration as JSON; ini: wild_report")
    group.addoption("--wild-only-failed", action="store_true", help="keep only cases the unedited model answers wrongly (QAEdit's protocol)")
    group.addoption("--wild-batch-size", type=int, metavar="B", help="edit B cases in one update (MEMIT, AlphaEdit, FT), then evaluate each (default: 1)")
    group.addoption("--wild-shard", metavar="K/N", help="run the K-th of N deterministic shards of the cases (merge reports with `pytest-wild merge-reports`)")
    group.addoption("--wild-devices", metavar="LIST", help="devices for xdist workers, round-robin: '0,1,2,3' (one GPU each) or '0+1,2+3' (groups for --wild-device-map); default: every visible GPU, else CPU")
    group.addoption("--wild-device-map", choices=("auto",), help="place a model too large for one GPU across the worker's GPUs with accelerate")
    group.addoption("--wild-markdown", metavar="FILE.md", help="write the results table as Markdown (e.g. for a CI job summary)")
    group.addoption("--wild-trust-remote-code", action="store_true", help="allow the model's own code from the hub (off by default)")
    parser.addini("wild_editor", "default editor for --wild runs")
    parser.addini("wild_model", "default model for --wild runs")
    parser.addini("wild_suite", "default suite for --wild runs")
    parser.addini("wild_eval", "default evaluation modes", default="wild")
    parser.addini("wild_metric", "default answer score", default="em")
    parser.addini("wild_device", "default device", default="auto")
    parser.addini("wild_dtype", "default dtype", default="float32")
    parser.addini("wild_gates", "session gates on aggregates", type="linelist", default=[])
    parser.addini("wild_thresholds", "per-case thresholds", type="linelist", default=[])
    parser.addini("wild_report", "JSON report path")
    parser.addini("wild_golden_dir", "root of the golden generations (default: golden/ under the rootdir)")


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("wild"):
        return
    config.addinivalue_line("markers", "wild: a WILD knowledge-editing case")
    try:
        if not hasattr(config, "workerinput"):
            _refuse_paths_after_a_space(config.invocation_params)
        run = _make_run(config)
        if not hasattr(config, "workerinput"):
            check_devices(run.options)
            run.cache_note = check_cache_root()
    except WildInputError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[RUN_KEY] = run
    if hasattr(config, "workerinput") and "wild_device" in config.workerinput:
        run.options.device = config.workerinput["wild_device"]
    from .golden import configure_goldens

    configure_goldens(config, run)
    if not hasattr(config, "workerinput"):
        try:
            _load_inputs(config, run)
        except WildInputError as exc:
            raise pytest.UsageError(str(exc)) from None
        _stop_on_sigterm(config)
        config.pluginmanager.register(ResultsListener(run), "wild-results")
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(WorkerListener(run), "wild-workers")
    config.args = [str(config.rootpath)]


def _load_inputs(config: pytest.Config, run) -> None:
    """Every input of the run, read and checked: the suite and its data, the model's files,
    the hyperparameters against the model, the golden directory, the output paths. On the
    controller at configure time, before any xdist worker starts, so a bad input ends the
    run with its one line and exit status 4 (a usage error) whether the run is serial or
    not; a worker repeats it at collection."""
    from .golden import check_golden_directory, goldens_on
    from .suite import find_suite, load_suite

    run.found = find_suite(run.options.suite, config.rootpath, config.invocation_params.dir)
    run.use_suite(load_suite(run.found, run.options.limit, run.options.sampling, config.rootpath))
    run.resolve_hparams()
    goldens = goldens_on(config)
    if goldens:
        check_golden_directory()
    _check_outputs(run, goldens)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI time limit, `kill`) before any case runs: taken as Ctrl-C."""


SESSION_KEY = pytest.StashKey[pytest.Session]()
SIGTERM_REASON = "received SIGTERM"


def _stop_on_sigterm(config: pytest.Config) -> None:
    """By default SIGTERM ends the process at once, with no report at all. Here it asks the
    session to stop after the case in progress (as `-x` does), so pytest finishes cleanly and
    the cases run so far reach a partial report (under xdist the controller stops handing out
    cases and shuts the workers down); raising from the handler instead could land
    in any frame, where pytest's own traceback rendering sometimes fails. Only where nobody
    else handles SIGTERM (and only in the main thread, where handlers can be set); the default
    comes back at unconfigure."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def stop(signum, frame) -> None:
        session = config.stash.get(SESSION_KEY, None)
        if session is None:
            raise Terminated(SIGTERM_REASON)
        config.stash[RUN_KEY].stop_reason = SIGTERM_REASON
        session.shouldstop = SIGTERM_REASON
        scheduler = config.pluginmanager.get_plugin("dsession")  # xdist's controller loop reads its own flag
        if scheduler is not None:
            scheduler.shouldstop = SIGTERM_REASON

    signal.signal(signal.SIGTERM, stop)
    config.add_cleanup(lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


def pytest_sessionstart(session: pytest.Session) -> None:
    """The session a SIGTERM asks to stop."""
    if RUN_KEY in session.config.stash:
        session.config.stash[SESSION_KEY] = session


def _refuse_paths_after_a_space(invocation: pytest.Config.InvocationParams) -> None:
    """pytest picks the rootdir (and the ini file) from the paths on the command line before
    it knows this plugin's options, so `--wild-suite ../data/x.json` moves the rootdir, and
    the goldens and caches under it, out of the project; that cannot be undone here, so the
    space form is refused. Input options only when the value names an existing path (pytest
    ignores other values, and hub ids look like paths); output options always, so the
    answer does not depend on whether the file exists yet."""
    args = invocation.args
    for option, given in zip(args, args[1:]):
        if option in OUTPUT_PATH_OPTIONS or (option in INPUT_PATH_OPTIONS and (invocation.dir / given).exists()):
            raise WildInputError(f"{option} {given}: write {option}={given} (with '='): pytest reads a path "
                                 "after a space as a test path and moves the rootdir to it")


def _make_run(config: pytest.Config):
    from .editors import available
    from .devices import parse_devices
    from .run import Options, WildRun, check_choice, parse_modes, parse_rules, parse_shard
    from .evaluation import mode_label
    from .stopping import STOP_RULES

    def value(option: str, ini: str | None = None):
        given = config.getoption(option)
        return given if given not in (None, []) else (config.getini(ini) if ini else None) or None

    editor = value("editor", "wild_editor")
    if not editor:
        raise WildInputError("--editor: name an editing method (see `pytest-wild editors`), or set wild_editor in the ini file")
    if editor not in available():
        raise WildInputError(f"--editor: unknown editor {editor!r} (available: {', '.join(sorted(available()))})")
    modes = parse_modes(value("wild_eval", "wild_eval") or "wild")
    stop_rule = check_choice(config.getoption("wild_stop") or "published", STOP_RULES, "--wild-stop")
    labels = tuple(mode_label(m, stop_rule) for m in modes)
    hparams_file = _path(config.getoption("wild_hparams"))
    if hparams_file is not None and not hparams_file.is_file():
        raise WildInputError(f"--wild-hparams: {hparams_file} does not exist")
    limit = config.getoption("wild_limit")
    if limit is not None and limit < 1:
        raise WildInputError(f"--wild-limit: expected a positive number of cases, got {limit}")
    report = value("wild_report", "wild_report")
    batch_size = config.getoption("wild_batch_size")
    batch_size = 1 if batch_size is None else batch_size
    if batch_size < 1:
        raise WildInputError(f"--wild-batch-size: expected a positive number of cases, got {batch_size}")
    markdown = config.getoption("wild_markdown")
    options = Options(
        editor=editor,
        model=value("wild_model", "wild_model"),
        suite=value("wild_suite", "wild_suite"),
        limit=limit,
        sampling=config.getoption("wild_sampling"),
        modes=modes,
        context=config.getoption("wild_context"),
        metric=check_choice(value("wild_metric", "wild_metric") or "em", ANSWER_SCORES, "--wild-metric"),
        hparams_file=hparams_file,
        device=value("wild_device", "wild_device") or "auto",
        dtype=check_choice(value("wild_dtype", "wild_dtype") or "float32", ("float32", "bfloat16", "float16"), "--wild-dtype"),
        stop_rule=stop_rule,
        gates=parse_rules(value("wild_gate", "wild_gates") or [], "--wild-gate", labels),
        thresholds=parse_rules(value("wild_threshold", "wild_thresholds") or [], "--wild-threshold", labels),
        report=_path(report),
        only_failed=config.getoption("wild_only_failed"),
        trust_remote_code=config.getoption("wild_trust_remote_code"),
        batch_size=batch_size,
        shard=parse_shard(config.getoption("wild_shard")),
        markdown=_path(markdown),
        devices=parse_devices(config.getoption("wild_devices")),
        device_map=config.getoption("wild_device_map"),
    )
    return WildRun(options)


def _path(value: str | None) -> Path | None:
    """A path option's value with `~` expanded (an ini value or a quoted one reaches us as is)."""
    return Path(value).expanduser() if value else None


def pytest_collect_directory(path: Path, parent: pytest.Collector):
    config = parent.config
    if RUN_KEY in config.stash and path == config.rootpath:
        return WildRoot.from_parent(parent, path=path)
    return None


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
            _load_inputs(self.config, run)
        found = run.found
        path = found if isinstance(found, Path) else self.config.rootpath
        try:
            nodeid = str(path.relative_to(self.config.rootpath)) if isinstance(found, Path) else None
        except ValueError:
            nodeid = None
        name = path.name if isinstance(found, Path) else found
        yield WildSuite.from_parent(self, path=path, name=name, nodeid=nodeid or name)


class WildSuite(InputErrorsInOneLine, pytest.File):
    """One suite: one `edit[<case id>]` test per case."""

    def collect(self):
        from .golden import goldens_on

        run = self.config.stash[RUN_KEY]
        goldens = goldens_on(self.config)
        for case in run.suite.cases:
            yield WildItem.from_parent(self, name=f"edit[{case.id}]", callobj=_case_test(case, goldens), case=case)


def _check_outputs(run, goldens: bool) -> None:
    """The report and Markdown paths, against each other, the run's input files and the
    goldens, and for writability, before anything is edited."""
    from .golden import WildGoldenExtension
    from .outputs import check_outputs

    suite = run.suite
    inputs = [path for path in (suite.path, Path(suite.source), run.options.hparams_file)
              if path is not None and path.is_file()]
    root = WildGoldenExtension.settings.root if goldens and WildGoldenExtension.settings else None
    check_outputs({"--wild-report": run.options.report, "--wild-markdown": run.options.markdown}, inputs, root)


class WildItem(pytest.Function):
    def __init__(self, *, case: Case, **kwargs) -> None:
        super().__init__(**kwargs)
        self.case = case
        self.add_marker("wild")

    def reportinfo(self):
        return self.path, None, f"{self.parent.name}::{self.name}"


def _case_test(case: Case, goldens: bool):
    """The test of one case; it asks for syrupy's `snapshot` only when syrupy is loaded (with
    `-p no:syrupy` the run goes on without goldens, and the summary says so)."""
    def test_edit(wild_run, request) -> None:
        snapshot = request.getfixturevalue("snapshot") if goldens else None
        row = wild_run.evaluate(case)
        request.node.user_properties.append((OUTPUT_KEY, row))
        if row.get("not_evaluable"):
            pytest.skip(f"{case.id} not evaluable: {row['not_evaluable']}")
        for mode, scores in row["modes"].items():
            for metric in EDIT_METRICS:
                if scores.get(metric) is not None:
                    request.node.user_properties.append((f"wild.{mode}.{metric}", scores[metric]))
        failures = wild_run.failures(row)
        if snapshot is not None:
            from .golden import check_golden

            failures += check_golden(snapshot, row, wild_run)  # after the thresholds; both reported
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)

    return test_edit


@pytest.fixture(scope="session")
def wild_run(request: pytest.FixtureRequest):
    """The run's state with the model loaded and the unedited answers computed (once per
    process, so once per xdist worker: see `pytest_runtestloop`)."""
    run = request.config.stash.get(RUN_KEY, None)
    if run is None:
        pytest.skip("wild_run is only available under --wild")
    return run


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Load the model and compute the unedited answers before the first case, where the
    cases run (not on an xdist controller). A model that cannot be loaded (a problem only
    loading finds, e.g. in a hub checkpoint) stops the session before any case runs, with
    its one line and exit status 2 (interrupted); the same under xdist, where each worker
    stops and the controller takes the line from it. (A bad input file never gets here: it
    is refused at configure, with exit status 4.)"""
    config = session.config
    run = config.stash.get(RUN_KEY, None)
    if run is None or config.option.collectonly or config.pluginmanager.has_plugin("dsession"):
        return
    cases = [item.case for item in session.items if isinstance(item, WildItem)]
    if not cases:
        return
    try:
        run.start(cases)
    except WildInputError as exc:
        run.fatal = session.shouldstop = str(exc)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> bool | None:
    """A process whose model could not be loaded runs no case."""
    run = item.config.stash.get(RUN_KEY, None)
    return True if run is not None and run.fatal else None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """After -k and marks: drop what --wild-only-failed drops, plan the edit batches, keep
    this shard's batches."""
    run = config.stash.get(RUN_KEY, None)
    if run is None or run.suite is None:
        return
    wild_items = [item for item in items if isinstance(item, WildItem)]
    dropped = _answered_already(run) if run.options.only_failed else set()
    run.plan_batches(dropped)
    shard = run.options.shard
    run.selected_before_sharding = sum(1 for item in wild_items if item.case.id not in dropped)
    deselected = [item for item in wild_items if item.case.id in dropped
                  or (shard and run.batch_of[item.case.id] % shard[1] != shard[0] - 1)]
    run.selected = len(wild_items) - len(deselected)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        gone = set(map(id, deselected))
        items[:] = [item for item in items if id(item) not in gone]


def _answered_already(run) -> set[str]:
    """Ids of the suite's cases whose unedited WILD answer already matches the target
    (all of the suite, not only the selected cases, so batches do not depend on -k)."""
    from .scores import SCORES

    cases = run.suite.cases
    try:
        before = run.evaluator().answers_before([case.prompt for case in cases])
    except WildInputError as exc:
        raise pytest.UsageError(str(exc)) from None
    score = SCORES[run.options.metric]
    answered = {case.id for case, gen in zip(cases, before) if score(gen.text, case.target) >= 1.0}
    run.dropped = len(answered)
    return answered


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        return None
    from .devices import header_devices

    o = run.options
    shard = f" shard={o.shard[0]}/{o.shard[1]}" if o.shard else ""
    return [f"wild: editor={o.editor} model={o.model or 'tinyworld'} suite={o.suite or 'tinyworld'} "
            f"eval={','.join(o.mode_labels)} metric={o.metric} dtype={o.dtype} batch={o.batch_size}{shard}",
            f"wild devices: {header_devices(config, o)}"] + ([f"wild cache: {run.cache_note}"] if run.cache_note else [])


class ResultsListener:
    """Collects per-case rows on the controller, from this process or from xdist workers."""

    def __init__(self, run) -> None:
        self.run = run

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Take the row out of the report before junitxml sees it; the flat metric
        properties stay for `--junitxml`."""
        rows = [value for key, value in report.user_properties if key == OUTPUT_KEY]
        report.user_properties[:] = [(k, v) for k, v in report.user_properties if k != OUTPUT_KEY]
        if rows and report.when == "call":
            self.run.rows.extend(rows)
        elif report.failed and not rows and report.nodeid not in self.run.lost:
            self.run.lost.append(report.nodeid)

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo) -> None:
        """Ctrl-C, SIGTERM, pytest.exit, xdist's -x, collection errors: pytest still calls
        sessionfinish after them, and the report it writes must not look complete."""
        self.run.stop_reason = str(excinfo.value) or excinfo.typename


class WorkerListener:
    """Receives what each xdist worker learnt about its model (fingerprint, dropped cases)."""

    def __init__(self, run) -> None:
        self.run = run

    def pytest_configure_node(self, node) -> None:
        """Give each worker its device (or device group), round-robin by worker number, so a
        replacement worker (gw4 after gw0 died) lands on a device as well."""
        from .devices import device_for_worker

        node.workerinput["wild_device"] = device_for_worker(node.gateway.id, self.run.options)

    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        """Every worker collects (and selects) the same cases; the controller does not."""
        self.run.selected = len(ids)

    def pytest_testnodedown(self, node, error) -> None:
        output = getattr(node, "workeroutput", {}).get(OUTPUT_KEY)
        if output:
            self.run.model_info = self.run.model_info or output["model"]
            self.run.suite_info = self.run.suite_info or output["suite"]
            self.run.selected_before_sharding = output["selected_before_sharding"]
            self.run.fatal = self.run.fatal or output["fatal"]
            if output["dropped"] is not None:
                self.run.dropped = output["dropped"]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        return
    if hasattr(config, "workerinput"):
        config.workeroutput[OUTPUT_KEY] = {"model": run.model_info, "dropped": run.dropped, "suite": run.suite_info,
                                           "selected_before_sharding": run.selected_before_sharding,
                                           "fatal": run.fatal}
        return
    if not run.rows and not run.lost:
        return  # nothing ran (the model failed to load, or the run was stopped first): nothing to replace
    from .finish import finish_run

    if session.shouldfail and run.stop_reason is None:
        run.stop_reason = str(session.shouldfail)  # -x, --maxfail: serially no interrupt, exit status 1
    if finish_run(run) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(RUN_KEY, None)
    if run is None or hasattr(config, "workerinput"):
        return
    from .finish import summary_lines

    if run.fatal:
        terminalreporter.write_line(f"ERROR: {run.fatal}", red=True)
        return
    if not run.rows and not run.lost:
        return
    terminalreporter.section("WILD results")
    for line in summary_lines(run):
        terminalreporter.write_line(line)
