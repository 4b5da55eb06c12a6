"""Golden snapshots of generations: one readable JSON file per case, written and compared
through syrupy.

    golden/<model>/<editor>/<suite>[+<setting>...]/<case id>.json

`<model>` is `tinyworld` for the bundled model, a local directory's name, or a hub id with
"/" as "__"; settings that change what is generated or scored (a context other than the
suite's, the sentence stop rule, F1, other evaluation modes, batch editing, another dtype)
are appended to the suite directory, so goldens of different evaluations never mix. The
golden root is `golden/` under the rootdir, or the ini setting `wild_golden_dir`.

A golden holds the case, the generations before and after the edit (edit question, rephrase,
each locality question) under the first mode that generates, and the scores of every mode,
rounded so float noise cannot flip them. Keys are sorted and files are replaced atomically,
so a rerun that generates the same text changes no byte.

Which goldens are unused (reported, and deleted by `--snapshot-update`): only files whose
case is not in the suite any more. Goldens of cases the run did not select (`--wild-limit`,
`-k`, `--wild-shard`, `--wild-only-failed`), or that crashed before comparing, are never
candidates; and when an xdist worker dies, the run deletes nothing at all.

Goldens come from pull requests, so they are data, never links: a golden is read, written
or deleted only as a regular file inside the golden root, reached through real directories
(see `checked_golden_path`), and a golden root that is a link out of the rootdir is refused.
A golden that is not UTF-8 fails its case with one line, and `--snapshot-update` replaces it.

Comparison starts once goldens exist for the run's configuration (its directory exists, or
`--snapshot-update` creates it); until then the run says how to record them and compares
nothing, so a project without goldens is not failed by them. A CI gate must not pass that
way: with `--wild-require-goldens` (ini `wild_require_goldens`) every case without a golden
fails with one line saying how to record it, as a missing snapshot does in syrupy.

Imported only under `--wild`; never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from syrupy.data import Snapshot, SnapshotCollection, SnapshotCollections
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

import pytest

from ..cases.case import WildInputError, case_key
from ..model.devices import xdist_loaded
from ..model.named import default_context
from ..scores.metrics import EDIT_METRICS
from ..scores.record import CaseResult
from ..storage import write_text_atomic

if TYPE_CHECKING:
    from ..run.options import Options
    from ..run.state import WildRun

INI_NAME = "wild_golden_dir"
DEFAULT_ROOT = "golden"
SCORE_DECIMALS = 2
GOLDEN_OUTPUT_KEY = "pytest_wild_golden"  # what a worker hands back about its goldens
NOT_UTF8 = "<this golden is not valid UTF-8>\n"  # what a golden that is not UTF-8 reads as


# --- paths -------------------------------------------------------------------------------

def model_key(spec: str | None) -> str:
    """`tinyworld`, a local directory's name, or a hub id with "/" as "__"."""
    if spec in (None, "", "tinyworld"):
        return "tinyworld"
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve().name
    return _safe(spec.strip("/").replace("/", "__"))


def suite_key(suite_name: str, suite_context: str, options: Options) -> str:
    """The suite's name, plus one `+<setting>` for each evaluation setting off its default."""
    parts = [_safe(suite_name.replace("/", "__"))]
    if options.context and options.context != suite_context:
        parts.append(f"context-{options.context}")
    if options.stop_rule != "published":
        parts.append(f"stop-{options.stop_rule}")
    if options.metric not in ("em", "judge"):  # a judge run's goldens hold exact match (judge.grading)
        parts.append(f"metric-{options.metric}")
    if getattr(options, "system_prompt", None) is not None:
        parts.append("system-" + hashlib.sha256(options.system_prompt.encode("utf-8")).hexdigest()[:8])
    if tuple(options.modes) != ("wild",):
        parts.append("eval-" + "-".join(options.modes))
    if getattr(options, "batch_size", 1) != 1:
        parts.append(f"batch-{options.batch_size}")
    if getattr(options, "sequential", None):
        parts.append(f"sequential-{options.sequential}")
    if getattr(options, "orders", None):
        parts.append(f"orders-{options.orders}-seed-{options.seed}")
    if options.dtype != "float32":
        parts.append(f"dtype-{options.dtype}")
    return "+".join(parts)


def golden_key(key: str, order: int | None) -> str:
    """A golden's file name: the case's key, and with --wild-orders its order
    (`tw-0042.order-2`; the configuration's directory then holds only such names, so two
    never meet)."""
    return key if order is None else f"{key}.order-{order}"


def _safe(name: str) -> str:
    """A directory name from a model, editor or suite name: characters outside
    [A-Za-z0-9._+-] become "_", no leading dot."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".") or "_"


class GoldenRefused(WildInputError):
    """A golden path that is or passes a link, is no regular file, or leads out of the golden
    root: refused, never followed."""


def checked_golden_path(path: Path | str, root: Path, *, directory: bool = False) -> Path:
    """`path`, when every step from `root` down to it is a real directory (checked with lstat,
    so no link is ever followed) and `path` itself a regular file (a directory when
    `directory`) or absent, resolving inside `root`; else `GoldenRefused`, one line naming
    it. A pull request can add a link as easily as a golden, and a followed link would show
    the linked file in a failure's diff, or let an update write or delete outside the tree."""
    path = Path(path)
    rule = f"goldens are read and written only as regular files in real directories inside {root.name}/"
    try:
        steps = path.relative_to(root).parts
    except ValueError:
        steps = ("..",)
    if ".." in steps:
        raise GoldenRefused(f"{path} is not inside {root.name}/; {rule}")
    step = root
    for depth, name in enumerate(steps, 1):
        step = step / name
        shown = step.relative_to(root.parent)
        try:
            mode = os.lstat(step).st_mode
        except FileNotFoundError:
            return path
        except NotADirectoryError:  # a step above is a file (the golden root itself, say)
            raise GoldenRefused(f"{shown.parent} is not a directory; {rule}") from None
        if stat.S_ISLNK(mode):
            raise GoldenRefused(f"{shown} is a symbolic link; {rule}")
        wanted = stat.S_ISREG if depth == len(steps) and not directory else stat.S_ISDIR
        if not wanted(mode):
            kind = "a directory" if wanted is stat.S_ISDIR else "a regular file"
            raise GoldenRefused(f"{shown} is not {kind}; {rule}")
    if not path.resolve().is_relative_to(root.resolve()):
        raise GoldenRefused(f"{path.relative_to(root.parent)} resolves outside {root.name}/; {rule}")
    return path


# --- content -----------------------------------------------------------------------------

def golden_record(row: CaseResult, options: Options) -> dict:
    """What a golden holds for one evaluated case (see the module docstring)."""
    record: dict[str, Any] = {
        "case": {"id": row.id, "prompt": row.prompt, "target": row.target,
                 "rephrase": row.rephrase},
        "scores": {mode: {name: _rounded(scores[name]) for name in EDIT_METRICS if name in scores}
                   for mode, scores in row.modes.items()},
    }
    mode = next((label for label in options.mode_labels if row.modes.get(label, {}).get("answers")), None)
    if mode is not None:
        answers = row.modes[mode]["answers"]
        generations: dict[str, Any] = {"mode": mode}
        for asked in ("prompt", "rephrase"):
            if asked in answers:
                generations[asked] = _pick(answers[asked], ("question", "context", "before", "after"))
        generations["locality"] = [_pick(item, ("question", "context", "answer", "before", "after"))
                                   for item in answers.get("locality", [])]
        record["generations"] = generations
    return record


def render(record: Any) -> str:
    """Stable text: sorted keys, two-space indent, UTF-8 kept readable, final newline."""
    return json.dumps(record, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _pick(answer: dict, keys: tuple[str, ...]) -> dict:
    return {key: answer[key] for key in keys if key in answer}


def _rounded(value):
    if value is None or isinstance(value, bool):
        return value
    return round(float(value), SCORE_DECIMALS) + 0.0  # + 0.0: never "-0.0"


# --- the syrupy extension ----------------------------------------------------------------

@dataclass
class GoldenSettings:
    """What the extension's classmethods need, set per process by `configure_goldens`."""

    config: Any
    run: Any
    root: Path
    _directory: Path | None = None
    _known: set[str] | None = None
    _present: bool | None = None
    compared: int = 0
    crashed: list[str] = field(default_factory=list)
    not_removed: list[str] = field(default_factory=list)  # unused goldens --snapshot-update could not remove, and why

    def directory(self) -> Path:
        """The configuration's golden directory; `GoldenRefused` when the golden root is a
        link out of the rootdir, or the way from it to the directory passes a link."""
        if self._directory is None:
            suite = self.run.suite
            if suite is None:
                raise RuntimeError("pytest-wild goldens: the suite is not loaded yet")
            options = self.run.options
            directory = (self.root / model_key(options.model) / _safe(options.editor)
                         / suite_key(suite.name, default_context(options.model, suite.context), options))
            rootdir = self.config.rootpath
            inside = Path(os.path.normpath(self.root)).is_relative_to(rootdir)
            if inside and not self.root.resolve().is_relative_to(rootdir.resolve()):
                raise GoldenRefused(f"{self.relative(self.root)} leads out of the rootdir through a symbolic "
                                    "link; goldens are read and written only inside the project")
            self._directory = checked_golden_path(directory, self.root, directory=True)
        return self._directory

    def present(self) -> bool:
        """Whether goldens exist for this configuration (checked once per process)."""
        if self._present is None:
            self._present = self.directory().is_dir()
        return self._present

    def known_keys(self, on_disk: set[str]) -> set[str] | None:
        """File names of the suite's cases: the cases collected in this run and, when
        `--wild-limit` sampled them, the suite's own. None when that cannot be told."""
        if self._known is None:
            orders = self.run.options.orders
            known = {case_key(case.id) for case in self.run.suite.cases}
            if on_disk - known and self.run.options.limit is not None and not orders:
                try:
                    from ..cases.suite import load_suite

                    whole = load_suite(self.run.found, None, None, self.config.rootpath)
                    known |= {case_key(case.id) for case in whole.cases}
                except Exception:
                    return None
            self._known = {golden_key(key, order) for key in known for order in range(1, orders + 1)} if orders else known
        return self._known

    def relative(self, path: Path | str) -> str:
        try:
            return str(Path(path).relative_to(self.config.rootpath))
        except ValueError:
            return str(path)


class WildGoldenExtension(SingleFileSnapshotExtension):
    """syrupy storage for pytest-wild goldens: `<golden dir>/<case id>.json`.

    Importable and constructible without arguments (an xdist controller re-creates it from
    its dotted name to delete unused goldens); configuration lives in `settings`."""

    _write_mode = WriteMode.TEXT
    file_extension = "json"
    settings: ClassVar[GoldenSettings | None] = None

    def serialize(self, data, *, exclude=None, include=None, matcher=None) -> str:
        return data if isinstance(data, str) else render(data)

    @classmethod
    def _settings(cls) -> GoldenSettings:
        if cls.settings is None:
            raise RuntimeError("pytest-wild goldens are only available under --wild")
        return cls.settings

    @staticmethod
    def _key(test_location) -> str:
        case = getattr(test_location.item, "case", None)
        if case is not None:
            return golden_key(case_key(case.id), getattr(test_location.item, "order", None))
        return case_key(str(test_location.nodename or ""))

    @classmethod
    def get_snapshot_name(cls, *, test_location, index=0) -> str:
        """The test's own name. syrupy relates snapshot names to tests by their leading
        identifier; a golden of a case gone from the suite is named `case_gone_from_suite[...]`
        instead, so no case of the run, skipped or expected to fail, claims it and keeps it
        from being reported and removed."""
        return str(test_location.nodename or cls._key(test_location))

    @classmethod
    def get_file_basename(cls, *, test_location, index) -> str:
        return cls._key(test_location)

    @classmethod
    def dirname(cls, *, test_location) -> str:
        return str(cls._settings().directory())

    @classmethod
    def discovery_dirname(cls, *, test_location) -> str:
        return cls.dirname(test_location=test_location)

    @classmethod
    def matches_test_location(cls, *, test_location, snapshot_location: str) -> bool:
        return Path(snapshot_location).stem == cls._key(test_location)

    def discover_snapshots(self, *, test_location, ignore_extensions=None) -> SnapshotCollections:
        """Only goldens whose case is gone from the suite: everything syrupy discovers may
        be reported unused and deleted, and a golden of an existing case never should be,
        whether this run selected the case or not. Links and other files that are not
        regular are never candidates (reading one fails its case instead)."""
        discovered = SnapshotCollections()
        directory = Path(self.dirname(test_location=test_location))
        if not directory.is_dir():
            return discovered
        root = self._settings().root
        files: dict[str, Path] = {}
        for path in directory.glob("*.json"):
            if path.name.startswith("."):
                continue
            with suppress(GoldenRefused):
                files[path.stem] = checked_golden_path(path, root)
        known = self._settings().known_keys(set(files))
        if known is None:
            return discovered
        for stem in sorted(set(files) - known):
            discovered.add(self.read_snapshot_collection(snapshot_location=str(files[stem])))
        return discovered

    def read_snapshot_collection(self, *, snapshot_location: str) -> SnapshotCollection:
        collection = SnapshotCollection(location=snapshot_location)
        collection.add(Snapshot(name=f"case_gone_from_suite[{Path(snapshot_location).stem}]"))
        return collection

    def read_snapshot_data_from_location(self, *, snapshot_location: str, snapshot_name: str,
                                         session_id: str) -> str | None:
        """The golden's text, read only through `checked_golden_path`; `NOT_UTF8`, which
        compares unequal, for a golden that is not UTF-8 (never its bytes)."""
        path = checked_golden_path(snapshot_location, self._settings().root)
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except UnicodeDecodeError:
            return NOT_UTF8

    def delete_snapshots(self, *, snapshot_location: str, snapshot_names: set[str]) -> None:
        """Remove an unused golden; one that cannot be (a read-only checkout) is kept and
        named at the end of the run, which then fails."""
        settings = self._settings()
        try:
            checked_golden_path(snapshot_location, settings.root).unlink(missing_ok=True)
        except OSError as exc:
            settings.not_removed.append(f"{settings.relative(snapshot_location)} ({exc.strerror or type(exc).__name__})")

    @classmethod
    def write_snapshot_collection(cls, *, snapshot_collection, name_order=None) -> None:
        """Write through a temporary file in the same directory, then `os.replace`, so a
        reader (or a crash) never sees half a golden."""
        target = checked_golden_path(snapshot_collection.location, cls._settings().root)
        data = next(iter(snapshot_collection)).data
        if not isinstance(data, str):
            raise TypeError(f"pytest-wild goldens are text, got {type(data).__name__}")
        write_text_atomic(target, data)


# --- the per-case check ------------------------------------------------------------------

def check_golden(snapshot, row: CaseResult, run: WildRun) -> list[str]:
    """Compare the case's golden (or record it under --snapshot-update); failure messages."""
    settings = WildGoldenExtension._settings()
    writing = bool(snapshot.update_snapshots or snapshot.update_new_snapshots_only)
    if not writing and not settings.present() and not run.options.require_goldens:
        return []
    settings.compared += 1
    record = golden_record(row, run.options)
    if snapshot == record:
        return []
    result = snapshot.executions[snapshot.num_executions - 1]
    where = settings.relative(result.snapshot_location)
    if result.exception is not None:
        return [f"golden {where}: cannot compare ({type(result.exception).__name__}: {result.exception})"]
    if result.recalled_data is None:
        return [f"golden {where} does not exist: run with --snapshot-update to record it"]
    if result.recalled_data == NOT_UTF8:
        return [f"golden {where} is not valid UTF-8: run with --snapshot-update to replace it"]
    lines = [f"golden {where} differs (- golden, + this run); accept with --snapshot-update:"]
    lines += _describe(result.recalled_data, result.asserted_data, snapshot)
    return ["\n".join(lines)]


def _describe(old_text: str, new_text: str, snapshot) -> list[str]:
    """Each changed value with its path (and the question, for a generation); syrupy's line
    diff when the golden is not JSON or differs only in formatting."""
    try:
        old, new = _flatten(json.loads(old_text)), _flatten(json.loads(new_text))
    except (ValueError, RecursionError):  # not JSON, or nested past what the parser follows (a hostile golden)
        old = new = None
    if old is not None and old != new:
        out = []
        for path in sorted(set(old) | set(new), key=_path_order(old, new)):
            if old.get(path, _MISSING) == new.get(path, _MISSING):
                continue
            asked = _question_of(path, new if path in new else old)
            out.append(f"  {path}" + (f"  (asked {asked})" if asked else ""))
            if path in old:
                out.append(f"    - {json.dumps(old[path], ensure_ascii=False)}")
            if path in new:
                out.append(f"    + {json.dumps(new[path], ensure_ascii=False)}")
        return out
    from syrupy.terminal import disable_color

    with disable_color():
        return ["  " + line for line in snapshot.extension.diff_lines(new_text, old_text)]


_MISSING = object()


def _flatten(value, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _path_order(old: dict, new: dict):
    order = {path: i for i, path in enumerate(list(new) + [p for p in old if p not in new])}
    return lambda path: order[path]


def _question_of(path: str, flat: dict) -> str | None:
    head, _, leaf = path.rpartition(".")
    if not path.startswith("generations.") or leaf not in ("before", "after"):
        return None
    question = flat.get(f"{head}.question")
    return json.dumps(question, ensure_ascii=False) if question is not None else None


# --- wiring ------------------------------------------------------------------------------

class GoldenReporter:
    """Says where goldens are (or how to record them) at the end of the run; on an xdist
    worker, hands that to the controller."""

    def __init__(self, settings: GoldenSettings) -> None:
        self.settings = settings
        self.workers: list[dict] = []

    def _state(self) -> dict:
        s = self.settings
        try:
            directory = s.relative(s.directory()) if s.run.suite is not None else None
        except (RuntimeError, GoldenRefused):
            directory = None
        return {"directory": directory, "compared": s.compared, "absent": s._present is False}

    @pytest.hookimpl(trylast=True)  # after syrupy's, which removes the unused goldens
    def pytest_sessionfinish(self, session) -> None:
        config = session.config
        if hasattr(config, "workeroutput"):
            config.workeroutput[GOLDEN_OUTPUT_KEY] = self._state()
        if self.settings.not_removed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter, exitstatus, config) -> None:
        if hasattr(config, "workerinput"):
            return
        states = self.workers or [self._state()]
        directory = next((s["directory"] for s in states if s.get("directory")), None)
        if self.settings.crashed:
            terminalreporter.write_line(
                "wild goldens: xdist worker(s) " + ", ".join(self.settings.crashed) + " crashed: "
                "unused goldens were kept (nothing deleted); rerun to find unused goldens")
        for kept in self.settings.not_removed:
            terminalreporter.write_line(f"wild goldens: an unused golden could not be removed, kept: {kept}", red=True)
        if directory is None:
            return
        absent = any(s["absent"] for s in states)
        if absent and self.settings.run.options.require_goldens:
            terminalreporter.write_line(
                f"wild goldens: none recorded for this configuration ({directory}), and --wild-require-goldens "
                "fails each case without one; record them with --snapshot-update and commit them")
        elif any(s["compared"] for s in states):
            terminalreporter.write_line(f"wild goldens: {directory}")
            if not getattr(config.option, "update_snapshots", False):
                for path in _unused_goldens(config):
                    terminalreporter.write_line(f"wild goldens: unused (its case is not in the suite): {path}")
        elif absent:
            terminalreporter.write_line(
                f"wild goldens: none recorded for this configuration ({directory}), so none were "
                "compared; record them with --snapshot-update")


def _unused_goldens(config) -> list[str]:
    """The goldens syrupy found unused (syrupy lists them only with --snapshot-details)."""
    report = getattr(getattr(config, "_syrupy", None), "report", None)
    try:
        if report is None or report.disable_unused_snapshots:
            return []
        return sorted(WildGoldenExtension._settings().relative(c.location) for c in report.unused)
    except Exception:
        return []


class GoldenGuard(GoldenReporter):
    """On the xdist controller: a worker that dies takes its syrupy report with it, so the
    goldens its cases used look unused; from then on the run deletes no golden."""

    def pytest_testnodedown(self, node, error) -> None:
        state = getattr(node, "workeroutput", {}).get(GOLDEN_OUTPUT_KEY)
        if state:
            self.workers.append(state)
        if error:
            self.settings.config.option.no_cleanup = True
            self.settings.crashed.append(str(getattr(getattr(node, "gateway", None), "id", node)))


def check_golden_directory() -> None:
    """At collection, before syrupy reads, writes or deletes anything: `GoldenRefused` (one
    line) when the configuration's golden directory could lead out of the golden root."""
    WildGoldenExtension._settings().directory()


def goldens_on(config: pytest.Config) -> bool:
    """Goldens need syrupy; `-p no:syrupy` turns them off for the run."""
    return config.pluginmanager.hasplugin("syrupy")


class GoldensOff:
    """With syrupy disabled (`-p no:syrupy`) nothing is compared or recorded: say so."""

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.write_line("wild goldens: not compared (the syrupy plugin is disabled: -p no:syrupy)")


def configure_goldens(config: pytest.Config, run: WildRun) -> None:
    """Under --wild: point syrupy's `snapshot` fixture at the golden extension and register
    the reporter (the crash guard on an xdist controller); without syrupy, only the notice."""
    if not goldens_on(config):
        if not hasattr(config, "workerinput"):
            config.pluginmanager.register(GoldensOff(), "wild-goldens")
        return
    try:
        configured = config.getini(INI_NAME)
    except ValueError:
        configured = None
    root = Path(configured or DEFAULT_ROOT).expanduser()
    if not root.is_absolute():
        root = config.rootpath / root
    if root.exists() and not root.is_dir():
        raise pytest.UsageError(f"{INI_NAME}: {configured or DEFAULT_ROOT} is not a directory")
    settings = GoldenSettings(config=config, run=run, root=root)
    WildGoldenExtension.settings = settings
    config.option.default_extension = f"{WildGoldenExtension.__module__}.{WildGoldenExtension.__qualname__}"
    controller = not hasattr(config, "workerinput") and xdist_loaded(config)
    plugin = GoldenGuard(settings) if controller else GoldenReporter(settings)
    config.pluginmanager.register(plugin, "wild-goldens")
