"""The run's options: read from the command line and the ini file, validated without importing
torch or transformers (without `--wild` the plugin imports neither), frozen once read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..cases.case import WildInputError
from ..judge.settings import JudgeSettings, judge_settings
from ..results.gates import Rule, parse_rule
from ..scores.metrics import ANSWER_SCORES, BESIDE_JUDGE, EDIT_METRICS, F1_BESIDE, MODES, mode_label, mode_labels

INPUT_PATH_OPTIONS = ("--wild-suite", "--wild-hparams", "--wild-model", "--wild-data", "--wild-judge-prompt")
OUTPUT_PATH_OPTIONS = ("--wild-report", "--wild-markdown", "--wild-plot", "--wild-run-dir", "--wild-resume")
PLOT_SUFFIXES = (".png", ".svg", ".pdf")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Options:
    """The run's options, as given and checked."""

    editor: str
    model: str | None
    suite: str | None
    limit: int | None
    modes: tuple[str, ...]
    context: str | None
    metric: str
    hparams_file: Path | None
    device: str
    dtype: str
    stop_rule: str
    sampling: str | None = None
    gates: list[Rule] = field(default_factory=list)
    thresholds: list[Rule] = field(default_factory=list)
    report: Path | None = None
    only_failed: bool = False
    last_missed: bool = False  # rerun only the edits the last run of this configuration missed
    trust_remote_code: bool = False
    seed: int = 0
    batch_size: int = 1
    shard: tuple[int, int] | None = None
    markdown: Path | None = None
    devices: list[str] | None = None
    device_map: str | None = None
    data_dir: Path | None = None  # where suites' "@data/" files are (--wild-data, PYTEST_WILD_DATA)
    case_ids: tuple[str, ...] = ()  # test ids given on the command line (e.g. pasted from -v output)
    sequential: int | None = None  # edits applied one after another to one model (--wild-sequential)
    checkpoints: tuple[int, ...] = (1, 10, 100, 1000)  # after how many edits a sequence is scored
    orders: int | None = None  # seeded random orders of the sequence, each its own sequence (--wild-orders)
    plot: Path | None = None  # where the sequence's curve is drawn (--wild-plot)
    run_dir: Path | None = None  # where a sequence keeps its progress (--wild-run-dir, or --wild-resume's)
    resume: bool = False  # the run directory holds a run to continue (--wild-resume)
    save_every: int = 100  # edits between two snapshots in the run directory
    conformance: bool = False  # check that the editor keeps the protocol, instead of running the suite
    judge: JudgeSettings | None = None  # the LLM judge of --wild-metric judge
    system_prompt: str | None = None  # the system turn of --wild-context chat (None: ours; "": none)
    require_goldens: bool = False  # a case with no golden fails (--wild-require-goldens)

    @property
    def primary_mode(self) -> str:
        return mode_label(self.modes[0], self.stop_rule)

    @property
    def mode_labels(self) -> tuple[str, ...]:
        return mode_labels(self.modes, self.stop_rule, self.editor)


def options_from_config(config: pytest.Config) -> Options:
    """The options of a `--wild` run, each checked with a one-line error naming it."""
    import os

    from ..editors import find
    from ..generation.stopping import STOP_RULES
    from ..model.devices import parse_devices
    from ..storage import cache_root

    def value(option: str, ini: str | None = None):
        given = config.getoption(option)
        return given if given not in (None, []) else (config.getini(ini) if ini else None) or None

    for dest in TEXT_OPTIONS:
        refuse_undecodable(config.getoption(dest), "--" + dest.replace("_", "-"))
    editor = value("editor", "wild_editor")
    if not editor:
        raise WildInputError("--editor: name an editing method (see `pytest-wild editors`), or set wild_editor in the ini file")
    find(editor)
    modes = parse_modes(value("wild_eval", "wild_eval") or "wild")
    stop_rule = check_choice(config.getoption("wild_stop") or "published", STOP_RULES, "--wild-stop")
    labels = mode_labels(modes, stop_rule, editor)
    hparams_file = _path(config.getoption("wild_hparams"))
    if hparams_file is not None and not hparams_file.is_file():
        raise WildInputError(f"--wild-hparams: {hparams_file} does not exist")
    data_dir = _path(config.getoption("wild_data") or os.environ.get("PYTEST_WILD_DATA"))
    if data_dir is not None and not data_dir.is_dir():
        raise WildInputError(f"--wild-data: {data_dir} is not a directory")
    limit = config.getoption("wild_limit")
    if limit is not None and limit < 1:
        raise WildInputError(f"--wild-limit: expected a positive number of cases, got {limit}")
    batch_size = config.getoption("wild_batch_size")
    batch_size = 1 if batch_size is None else batch_size
    if batch_size < 1:
        raise WildInputError(f"--wild-batch-size: expected a positive number of cases, got {batch_size}")
    sequential = config.getoption("wild_sequential")
    if sequential is not None and sequential < 1:
        raise WildInputError(f"--wild-sequential: expected a positive number of edits, got {sequential}")
    checkpoints = parse_checkpoints(config.getoption("wild_checkpoints") or "1,10,100,1000")
    if sequential is not None and config.getoption("wild_shard"):
        raise WildInputError("--wild-shard: a sequence of edits runs on one model in one process and cannot be sharded")
    if sequential is not None and config.getoption("wild_only_failed"):
        raise WildInputError("--wild-only-failed: not with --wild-sequential (select the sequence's cases with -k or the suite)")
    orders, plot, run_dir, resume, save_every = sequence_options(config, sequential)
    last_missed = config.getoption("wild_last_missed")
    if last_missed and sequential is not None:
        raise WildInputError("--wild-last-missed: not with --wild-sequential (a sequence's edits depend on the ones "
                             "before them; select the sequence's cases with -k or the suite)")
    if last_missed and getattr(config, "cache", None) is None:
        raise WildInputError("--wild-last-missed: needs pytest's cache, which -p no:cacheprovider turned off")
    metric = check_choice(value("wild_metric", "wild_metric") or "em", ANSWER_SCORES, "--wild-metric")
    judge = judge_settings(metric, cache_root() / "judge" / "verdicts.sqlite3", config.getoption("wild_judge"),
                           config.getoption("wild_judge_model"), config.getoption("wild_judge_prompt"),
                           config.getoption("wild_judge_concurrency"), config.getoption("wild_judge_allow_unjudged"),
                           config.getoption("wild_judge_retries"), config.getoption("wild_judge_timeout"))
    gates = parse_rules(value("wild_gate", "wild_gates") or [], "--wild-gate", labels)
    thresholds = parse_rules(value("wild_threshold", "wild_thresholds") or [], "--wild-threshold", labels)
    check_judge_rules(metric, gates, thresholds)
    conformance = config.getoption("wild_conformance")
    if conformance:
        refuse_beside_conformance(config)
    require_goldens = bool(config.getoption("wild_require_goldens") or config.getini("wild_require_goldens"))
    if require_goldens and not conformance and not config.pluginmanager.hasplugin("syrupy"):
        raise WildInputError("--wild-require-goldens: goldens are compared through syrupy, which this run disables "
                             "(-p no:syrupy)")
    return Options(
        editor=editor,
        model=value("wild_model", "wild_model"),
        suite=value("wild_suite", "wild_suite"),
        limit=limit,
        sampling=config.getoption("wild_sampling"),
        modes=modes,
        context=config.getoption("wild_context"),
        metric=metric,
        hparams_file=hparams_file,
        device=value("wild_device", "wild_device") or "auto",
        dtype=check_choice(value("wild_dtype", "wild_dtype") or "float32", DTYPES, "--wild-dtype"),
        stop_rule=stop_rule,
        gates=gates,
        thresholds=thresholds,
        report=_path(value("wild_report", "wild_report")),
        only_failed=config.getoption("wild_only_failed"),
        last_missed=last_missed,
        trust_remote_code=config.getoption("wild_trust_remote_code"),
        batch_size=batch_size,
        shard=parse_shard(config.getoption("wild_shard")),
        markdown=_path(config.getoption("wild_markdown")),
        devices=parse_devices(config.getoption("wild_devices")),
        device_map=config.getoption("wild_device_map"),
        data_dir=data_dir,
        case_ids=given_case_ids(config),
        sequential=sequential,
        checkpoints=checkpoints,
        orders=orders,
        plot=plot,
        run_dir=run_dir,
        resume=resume,
        save_every=save_every,
        conformance=conformance,
        judge=judge,
        system_prompt=config.getoption("wild_system_prompt"),
        require_goldens=require_goldens,
    )


def check_judge_rules(metric: str, gates: list[Rule], thresholds: list[Rule]) -> None:
    """The metrics beside the judge exist only in a judge run, F1 beside the metrics in every
    run but an F1 one; and a case's test runs before the judge grades (at the end of the run),
    so no per-case threshold reads its verdicts."""
    for rule in gates:
        if rule.metric in BESIDE_JUDGE and metric != "judge":
            raise WildInputError(f"--wild-gate: {rule.text!r}: {rule.metric} exists only with --wild-metric judge")
        if rule.metric in F1_BESIDE and metric == "f1":
            raise WildInputError(f"--wild-gate: {rule.text!r}: with --wild-metric f1, {rule.metric.removesuffix('_f1')} "
                                 "is the F1 already")
    for rule in thresholds:
        if rule.metric not in EDIT_METRICS:
            raise WildInputError(f"--wild-threshold: {rule.text!r}: {rule.metric} is computed at the end of the run; "
                                 "use --wild-gate")
        if metric == "judge" and rule.metric in ("reliability", "generalization") and rule.mode != "synthetic":
            raise WildInputError(f"--wild-threshold: {rule.text!r}: each case's test runs before the judge grades "
                                 "(at the end of the run); gate on its verdicts with --wild-gate")


# Options naming files, directories or models: written into the report and the summary as text.
TEXT_OPTIONS = ("wild_suite", "wild_model", "wild_hparams", "wild_report", "wild_markdown", "wild_plot", "wild_run_dir",
                "wild_resume", "wild_data", "wild_judge", "wild_judge_prompt", "wild_judge_model", "editor")


def refuse_undecodable(value, option: str) -> None:
    """A command-line value holding bytes that are not UTF-8 (Python keeps them as lone
    surrogates) is refused in one line: the report, JSON in UTF-8, could not hold it."""
    if not isinstance(value, str):
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(value[exc.start]) - 0xDC00 if "\udc80" <= value[exc.start] <= "\udcff" else None
        where = f"byte 0x{byte:02x}" if byte is not None else f"character {exc.start}"
        raise WildInputError(f"{option}: {value!r} is not UTF-8 text ({where}); rename it") from None


MAX_ORDERS = 100  # every order is a test per case, collected up front: 100,000 orders hung collection


def sequence_options(config: pytest.Config, sequential: int | None):
    """--wild-orders, --wild-plot, --wild-run-dir, --wild-resume and --wild-save-every, which
    only a sequence takes."""
    orders, plot = config.getoption("wild_orders"), _path(config.getoption("wild_plot"))
    run_dir, resume_dir = _path(config.getoption("wild_run_dir")), _path(config.getoption("wild_resume"))
    save_every = config.getoption("wild_save_every")
    given = {"--wild-orders": orders, "--wild-plot": plot, "--wild-run-dir": run_dir, "--wild-resume": resume_dir,
             "--wild-save-every": save_every, "--wild-checkpoints": config.getoption("wild_checkpoints")}
    for option, value in given.items():
        if value is not None and sequential is None:
            raise WildInputError(f"{option}: only with --wild-sequential N (a sequence of edits)")
    if orders is not None and not 1 <= orders <= MAX_ORDERS:
        raise WildInputError(f"--wild-orders: expected a number of orders from 1 to {MAX_ORDERS} (each is a whole "
                             f"sequence of edits), got {orders}")
    if save_every is not None and save_every < 1:
        raise WildInputError(f"--wild-save-every: expected a positive number of edits, got {save_every}")
    if save_every is not None and run_dir is None and resume_dir is None:
        raise WildInputError("--wild-save-every: only with --wild-run-dir DIR or --wild-resume DIR (where snapshots are saved)")
    if plot is not None:
        if plot.suffix.lower() not in PLOT_SUFFIXES:
            raise WildInputError(f"--wild-plot {plot}: the file name must end in {', '.join(PLOT_SUFFIXES)}")
        try:
            import matplotlib  # noqa: F401  (only asked for here, where the plot is)
        except ImportError:
            raise WildInputError("--wild-plot: matplotlib is not installed; pip install 'pytest-wild[plot]'") from None
    if run_dir is not None and resume_dir is not None and run_dir != resume_dir:
        raise WildInputError(f"--wild-resume {resume_dir}: the run continues in its own directory; "
                             f"leave out --wild-run-dir {run_dir}")
    if resume_dir is not None and not resume_dir.is_dir():
        raise WildInputError(f"--wild-resume {resume_dir}: no such directory")
    return orders, plot, resume_dir or run_dir, resume_dir is not None, 100 if save_every is None else save_every


# What a conformance run cannot take: it makes its own edits and writes no results.
NOT_WITH_CONFORMANCE = {
    "wild_sequential": "--wild-sequential", "wild_batch_size": "--wild-batch-size", "wild_shard": "--wild-shard",
    "wild_only_failed": "--wild-only-failed", "wild_last_missed": "--wild-last-missed", "wild_gate": "--wild-gate", "wild_threshold": "--wild-threshold",
    "wild_report": "--wild-report", "wild_markdown": "--wild-markdown", "wild_limit": "--wild-limit",
    "snapshot_update": "--snapshot-update", "wild_judge": "--wild-judge",
    "wild_require_goldens": "--wild-require-goldens",
}


def refuse_beside_conformance(config: pytest.Config) -> None:
    for dest, option in NOT_WITH_CONFORMANCE.items():
        if config.getoption(dest, default=None) not in (None, False, []):
            raise WildInputError(f"{option}: not with --wild-conformance (the checks make their own edits "
                                 "of the suite's cases and write no results)")


def given_case_ids(config: pytest.Config) -> tuple[str, ...]:
    """Test ids among the command line's positional arguments (as pytest parsed them, so an
    option's value such as `-W error::DeprecationWarning` is not one); an xdist worker gets
    them from the controller, whose arguments the plugin replaced with the rootdir."""
    if hasattr(config, "workerinput"):
        return tuple(config.workerinput.get("wild_case_ids", ()))
    return tuple(str(arg) for arg in config.args if "::" in str(arg))


def parse_checkpoints(text: str) -> tuple[int, ...]:
    """"1,10,100,1000" -> (1, 10, 100, 1000): after how many edits a sequence is scored (the
    last edit always is)."""
    try:
        found = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        found = []
    if not found or found[0] < 1:
        raise WildInputError(f"--wild-checkpoints: {text!r}: write positive numbers of edits separated by commas, "
                             "e.g. 1,10,100,1000")
    return tuple(found)


def parse_modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise WildInputError(f"--wild-eval: {text!r}: use a comma list of {', '.join(MODES)}")
    return tuple(dict.fromkeys(modes))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        k = n = 0
    if not 1 <= k <= n:
        raise WildInputError(f"--wild-shard: {text!r}: write K/N with 1 <= K <= N, e.g. 2/4")
    return k, n


def check_choice(value: str, choices: tuple[str, ...], option: str) -> str:
    if value not in choices:
        raise WildInputError(f"{option}: {value!r} is not one of {', '.join(choices)}")
    return value


def parse_rules(texts: list[str], option: str, labels: tuple[str, ...]) -> list[Rule]:
    return [parse_rule(text, option, labels) for text in texts]


def refuse_paths_after_a_space(invocation: pytest.Config.InvocationParams) -> None:
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


def _path(value: str | None) -> Path | None:
    """A path option's value with `~` expanded (an ini value or a quoted one reaches us as is)."""
    return Path(value).expanduser() if value else None
