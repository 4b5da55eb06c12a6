"""The pytest plugin's hooks, in the order a run meets them; each hands off to the module that
owns the work: options (`run.options`), collection (`run.collect`), which cases run
(`run.selection`), the header (`run.header`), the per-process runtime (`run.runtime`), the
results the controller gathers (`results.gathered`), the end of the run and
its summary, printed after pytest's own (`run.finish`), goldens (`results.golden`), SIGTERM
(`run.sigterm`).

Loaded in every pytest run of every project that installs pytest-wild, so without `--wild`
it registers its options and does nothing else, and it never imports torch or transformers
at module level.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .cases.case import WildInputError
from .cases.contexts import CONTEXTS
from .run.collect import RUN_KEY, WildItem, WildRoot
from .run.header import header_lines
from .run.selection import select
from .run.sigterm import SESSION_KEY
from .scores.metrics import ANSWER_SCORES


def pytest_addoption(parser: pytest.Parser) -> None:
    """The --wild options and their ini keys (registered in every run, used only under --wild)."""
    group = parser.getgroup("wild", "WILD evaluation of knowledge edits (pytest-wild)")
    group.addoption("--wild", action="store_true", help="run the WILD suite instead of the project's tests")
    group.addoption("--editor", help="editing method (see `pytest-wild editors`); ini: wild_editor")
    group.addoption("--wild-model", metavar="PATH_OR_ID", help="causal LM: a local directory, hub id or named model (pytest-wild models; default: bundled tinyworld); ini: wild_model")
    group.addoption("--wild-suite", metavar="NAME_OR_PATH", help="suite name, suite .yaml, QAEdit .json/.jsonl or hub dataset id (default: tinyworld); ini: wild_suite")
    group.addoption("--wild-limit", type=int, metavar="N", help="evaluate N of the suite's cases (see --wild-sampling)")
    group.addoption("--wild-sampling", choices=("seeded", "first"), help="which N cases --wild-limit keeps: a seeded sample, or the first N in file order as the paper's code does (default: the suite's, else seeded)")
    group.addoption("--wild-eval", metavar="MODES", help="comma list of wild, synthetic, length (default: wild); ini: wild_eval")
    group.addoption("--wild-context", choices=CONTEXTS, help="how questions are put: bare, the paper's QA instruction, the paper's fixed Llama-2 chat prompt, or the model's own chat template (default: the suite's, else question)")
    group.addoption("--wild-metric", choices=ANSWER_SCORES, help="answer score: exact match, token F1, or an LLM judge's verdict (see --wild-judge; default: em); ini: wild_metric")
    group.addoption("--wild-judge", metavar="URL|hf:PATH_OR_ID", help="the judge of --wild-metric judge: an OpenAI-compatible server's URL (key from $WILD_JUDGE_API_KEY, else $OPENAI_API_KEY) or a local Hugging Face model")
    group.addoption("--wild-judge-model", metavar="NAME", help="the model the judge server is asked for")
    group.addoption("--wild-judge-prompt", metavar="published|FILE", help="the paper's grader prompt (published), or one of your own with {question}, {gold} and {prediction}, instead of ours")
    group.addoption("--wild-judge-concurrency", type=int, metavar="N", help="requests to the judge server at once (default: 32)")
    group.addoption("--wild-judge-retries", type=int, metavar="N", help="retries of a judge request after a timeout, a connection error, 429 (after its Retry-After) or 5xx, with exponential backoff (default: 4)")
    group.addoption("--wild-judge-timeout", type=float, metavar="SECONDS", help="how long one judge request may take, its reply read in full (default: 60)")
    group.addoption("--wild-judge-allow-unjudged", action="store_true", help="let gates on the judge's verdicts pass or fail on the answers it judged, when some could not be judged")
    group.addoption("--wild-system-prompt", metavar="TEXT", help="the system turn of --wild-context chat (default: the paper's one sentence; '' for none)")
    group.addoption("--wild-stop", choices=("published", "sentence"), help="stop rule: the paper's (default) or sentence ends; reported under its own name")
    group.addoption("--wild-hparams", metavar="FILE.yaml", help="editor hyperparameters overriding the defaults (EasyEdit keys accepted)")
    group.addoption("--wild-device", metavar="DEVICE", help="cpu, cuda, cuda:N or auto (default: auto); ini: wild_device")
    group.addoption("--wild-dtype", choices=("float32", "bfloat16", "float16"), help="model dtype (default: float32); ini: wild_dtype")
    group.addoption("--wild-gate", action="append", default=[], metavar="RULE", help='session gate on aggregates, e.g. "reliability>=0.5", "synthetic.reliability>=0.9" (repeatable); ini: wild_gates')
    group.addoption("--wild-threshold", action="append", default=[], metavar="RULE", help='per-case threshold, e.g. "locality>=1" (repeatable; replaces the suite\'s for that metric); ini: wild_thresholds')
    group.addoption("--wild-report", metavar="FILE.json", help="write per-case results, aggregates and configuration as JSON; ini: wild_report")
    group.addoption("--wild-only-failed", action="store_true", help="keep only cases the unedited model answers wrongly (QAEdit's protocol)")
    group.addoption("--wild-last-missed", action="store_true", help="rerun only the edits the last run of this editor, model, suite, context, mode and metric missed (its expected failures, which --lf does not rerun); all cases when it recorded none, as --lf does")
    group.addoption("--wild-batch-size", type=int, metavar="B", help="edit B cases in one update (MEMIT, AlphaEdit, FT), then evaluate each (default: 1)")
    group.addoption("--wild-sequential", type=int, metavar="N", help="apply the suite's first N selected cases one after another to one model, never restoring, and score them at checkpoints")
    group.addoption("--wild-checkpoints", metavar="LIST", help="after how many edits a sequence is scored (default 1,10,100,1000; the last edit always)")
    group.addoption("--wild-orders", type=int, metavar="K", help="run the sequence's edits in K seeded random orders, each its own sequence (spread over xdist workers); the curve shows their mean and spread")
    group.addoption("--wild-plot", metavar="FILE.png", help="draw the sequence's curve (.png, .svg or .pdf; needs pip install 'pytest-wild[plot]')")
    group.addoption("--wild-run-dir", metavar="DIR", help="keep a sequence's progress in DIR (snapshots of the touched tensors, the editor's state, the results so far), so a killed run can be resumed")
    group.addoption("--wild-resume", metavar="DIR", help="continue the sequence whose run directory is DIR (the same options, model and suite; what differs is refused)")
    group.addoption("--wild-save-every", type=int, metavar="K", help="with --wild-run-dir: a snapshot every K edits, and at every checkpoint (default: 100)")
    group.addoption("--wild-conformance", action="store_true", help="instead of the suite, check that the editor keeps the editor protocol (exact restore, untouched parameters, an effect on the edited question, determinism, no leaked state, a batch, a 20-edit sequence): one test per check")
    group.addoption("--wild-shard", metavar="K/N", help="run the K-th of N deterministic shards of the cases (merge reports with `pytest-wild merge-reports`)")
    group.addoption("--wild-devices", metavar="LIST", help="devices for xdist workers, round-robin: '0,1,2,3' (one GPU each) or '0+1,2+3' (groups for --wild-device-map); default: every visible GPU, else CPU")
    group.addoption("--wild-device-map", choices=("auto",), help="place a model too large for one GPU across the worker's GPUs with accelerate")
    group.addoption("--wild-require-goldens", action="store_true", help="fail each case that has no golden, as a CI gate must (without it, a configuration with no goldens recorded compares none); ini: wild_require_goldens")
    group.addoption("--wild-markdown", metavar="FILE.md", help="write the results table as Markdown (e.g. for a CI job summary)")
    group.addoption("--wild-trust-remote-code", action="store_true", help="allow the model's own code from the hub (off by default)")
    group.addoption("--wild-data", metavar="DIR", help="the benchmark data directory, where suites' \"@data/NAME\" files are (e.g. ../shared/data for the bundled qaedit-800; default: $PYTEST_WILD_DATA)")
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
    parser.addini("wild_require_goldens", "fail each case that has no golden", type="bool", default=False)
    parser.addini("wild_golden_dir", "root of the golden generations (default: golden/ under the rootdir)")


def pytest_configure(config: pytest.Config) -> None:
    """Under --wild: read and check the options and every input, on the controller before
    any worker starts (a bad one is a usage error, exit 4), and register the listeners."""
    if not config.getoption("wild"):
        return
    config.addinivalue_line("markers", "wild: a WILD knowledge-editing case")
    worker = hasattr(config, "workerinput")
    try:
        run = _make_run(config, worker)
    except WildInputError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[RUN_KEY] = run
    if not run.options.conformance:  # a conformance run has no generations to compare
        from .results.golden import configure_goldens

        configure_goldens(config, run)
    if worker:
        from .run.sigterm import stop_on_sigterm

        stop_on_sigterm(config, run.results)
    else:
        _start_controller(config, run)
    config.args = [str(config.rootpath)]


def _make_run(config: pytest.Config, worker: bool):
    from dataclasses import replace

    from .model.devices import check_devices
    from .results.outputs import check_cache_root
    from .run.options import options_from_config, refuse_paths_after_a_space
    from .run.progress import Progress
    from .run.state import WildRun

    if worker:
        options = options_from_config(config)
        if "wild_device" in config.workerinput:
            options = replace(options, device=config.workerinput["wild_device"])
        return WildRun(options, progress=Progress(config))
    refuse_paths_after_a_space(config.invocation_params)
    options = options_from_config(config)
    check_devices(options)
    return WildRun(options, cache_note=check_cache_root(), progress=Progress(config))


def _start_controller(config: pytest.Config, run) -> None:
    from .model.devices import xdist_loaded
    from .results.gathered import ResultsListener, WorkerListener
    from .run.collect import load_inputs
    from .run.finish import EndOfRun
    from .run.sigterm import stop_on_sigterm

    try:
        load_inputs(config, run)
    except WildInputError as exc:
        raise pytest.UsageError(str(exc)) from None
    stop_on_sigterm(config, run.results)
    if not run.options.conformance:  # whose checks are plain tests, with no rows to gather
        config.pluginmanager.register(ResultsListener(run.results), "wild-results")
        config.pluginmanager.register(EndOfRun(run), "wild-end-of-run")
    if xdist_loaded(config):
        config.pluginmanager.register(WorkerListener(run.results, run.options), "wild-workers")


def pytest_sessionstart(session: pytest.Session) -> None:
    """The session a SIGTERM asks to stop."""
    if RUN_KEY in session.config.stash:
        session.config.stash[SESSION_KEY] = session


def pytest_collect_directory(path: Path, parent: pytest.Collector):
    """Under --wild the rootdir collects the suite, and nothing else is collected."""
    config = parent.config
    if RUN_KEY in config.stash and path == config.rootpath:
        return WildRoot.from_parent(parent, path=path)
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    """After -k and marks: which cases this process runs (`run.selection`)."""
    run = config.stash.get(RUN_KEY, None)
    if run is not None and run.suite is not None:
        select(config, run, items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """A sequence runs on one process: each sequence (the suite's, or each --wild-orders
    order) is one scope of xdist's scope scheduling, sent whole to one worker."""
    run = config.stash.get(RUN_KEY, None)
    if run is None or not run.options.sequential:
        return None
    from .sequence.scheduling import SequenceScheduling

    return SequenceScheduling(config, log)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """The run's configuration, devices, and what the user should know before it starts (`run.header`)."""
    run = config.stash.get(RUN_KEY, None)
    return None if run is None else header_lines(config, run)


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
    stops and the controller takes the line from it."""
    config = session.config
    run = config.stash.get(RUN_KEY, None)
    if run is None or config.option.collectonly or config.pluginmanager.has_plugin("dsession"):
        return
    cases = [item.case for item in session.items if isinstance(item, WildItem)]
    if not cases:
        return
    try:
        run.runtime.start(cases)
    except WildInputError as exc:
        run.results.fail(str(exc))
        session.shouldstop = str(exc)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> bool | None:
    """A process whose model could not be loaded runs no case."""
    run = item.config.stash.get(RUN_KEY, None)
    return True if run is not None and run.results.fatal else None


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A worker publishes what it learnt; the controller aggregates, decides the gates and
    writes the report (a failed gate fails the run)."""
    config = session.config
    run = config.stash.get(RUN_KEY, None)
    if run is None:
        return
    if hasattr(config, "workerinput"):
        run.results.describe_model(run.runtime.model_info if run.runtime else {})
        run.results.publish(config.workeroutput)
        return
    results = run.results
    if not results.rows and not results.lost and not results.sequences_stopped:
        return  # nothing ran (the model failed to load, or the run was stopped first): nothing to replace
    from .run.finish import finish_run

    if run.runtime and run.runtime.model_info:
        results.describe_model(run.runtime.model_info)
    if session.shouldfail and results.stop_reason is None:
        results.stop(str(session.shouldfail))  # -x, --maxfail: serially no interrupt, exit status 1
    results.conclude(finish_run(run))
    if getattr(config, "cache", None) is not None:
        from .results.missed import remember

        remember(config.cache, run.options, results.rows)
    if results.outcome.failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if results.terminated() and session.exitstatus == pytest.ExitCode.OK:  # SIGTERM while judging, after the last case
        session.exitstatus = pytest.ExitCode.INTERRUPTED
