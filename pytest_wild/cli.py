"""The `pytest-wild` command: list editors and suites, merge sharded reports, compare runs in
one table, rebuild the bundled tiny model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _editors(args: argparse.Namespace) -> int:
    from .editors import available, get_editor

    for name in sorted(available()):
        print(f"{name:<12} {get_editor(name).description}")
    return 0


def _suites(args: argparse.Namespace) -> int:
    from .cases import WildInputError
    from .suite import BUNDLED_SUITES, available_suites, describe

    for name, path in available_suites(Path.cwd()).items():
        origin = "bundled" if path.is_relative_to(BUNDLED_SUITES) else str(path.relative_to(Path.cwd()))
        try:
            description, source = describe(path)
        except WildInputError as exc:
            description, source = f"unreadable: {exc}", "?"
        print(f"{name:<22} {origin:<18} {source:<42} {description}")
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
    from .cases import WildInputError
    from .merge import merge_reports
    from .report import write_json_atomic

    try:
        merged = merge_reports([Path(p) for p in args.reports], allow_partial=args.allow_partial)
    except WildInputError as exc:
        for line in str(exc).splitlines():  # one per malformed report, missing shard list or partial report
            print(f"pytest-wild merge-reports: {line}", file=sys.stderr)
        return 2
    write_json_atomic(Path(args.output), merged)
    partial = "" if merged["complete"] else " (partial: marked \"complete\": false)"
    print(f"merged {len(args.reports)} reports, {len(merged['samples'])} cases, into {args.output}{partial}")
    return 0


def _table(args: argparse.Namespace) -> int:
    from .cases import WildInputError
    from .compare import markdown, run_line, sequence_markdown

    try:
        if args.sequence:
            lines = sequence_markdown([Path(source) for source in args.sources], args.mode)
        else:
            lines = markdown([run_line(Path(source), args.mode) for source in args.sources])
    except WildInputError as exc:
        print(f"pytest-wild table: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pytest-wild", description="WILD evaluation of LLM knowledge edits.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("editors", help="list the editors with a one-line description").set_defaults(func=_editors)
    commands.add_parser("suites", help="list the suites --wild-suite can name here: this project's suites/, "
                        "then the bundled ones").set_defaults(func=_suites)
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
    compare = commands.add_parser("table", help="one Markdown line per run, from JSON reports or golden directories "
                                  "(golden/<model>/<editor>/<suite>), to compare editors")
    compare.add_argument("sources", nargs="+", help="reports written with --wild-report, or golden directories")
    compare.add_argument("--mode", default="wild", help="evaluation mode to show (default: wild)")
    compare.add_argument("--sequence", action="store_true",
                         help="the curves of sequential runs' reports (--wild-sequential), one line per checkpoint")
    compare.set_defaults(func=_table)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
