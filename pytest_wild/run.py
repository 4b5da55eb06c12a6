"""The state of one `pytest --wild` run: the options as given, the suite, and (loaded on
first use, once per process) the model, the editor with its hyperparameters and the
evaluator. Per-case results flow back to the controller as plain values."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

from .cases import Case, WildInputError
from .evaluation import MODES, Settings, mode_label
from .gates import Rule, parse_rule
from .report import unevaluable
from .suite import Suite


@dataclass
class Options:
    """The run's options, validated without importing torch."""

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
    trust_remote_code: bool = False
    seed: int = 0
    batch_size: int = 1
    shard: tuple[int, int] | None = None
    markdown: Path | None = None
    devices: list[str] | None = None
    device_map: str | None = None

    @property
    def primary_mode(self) -> str:
        return mode_label(self.modes[0], self.stop_rule)

    @property
    def mode_labels(self) -> tuple[str, ...]:
        return tuple(mode_label(m, self.stop_rule) for m in self.modes)


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


class WildRun:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.suite: Suite | None = None
        self.found: Path | str | None = None  # the suite file, data file or hub id --wild-suite named
        self.rows: list[dict] = []
        self.lost: list[str] = []
        self.dropped: int | None = None
        self.model_info: dict = {}
        self.gate_results: list[dict] = []
        self.results: dict = {}
        self._loaded = None
        self._checked = None
        self.fatal: str | None = None  # why the model could not be loaded where the cases run
        self.cache_note: str | None = None  # said in the header when the cache cannot be written
        self._editor = None
        self._hparams = None
        self._evaluator = None
        self._pending: dict[str, dict] = {}
        self.suite_info: dict | None = None  # under xdist the controller learns it from a worker
        self.batches: list[list[Case]] = []
        self.batch_of: dict[str, int] = {}
        self.selected: int | None = None  # cases this run (this shard) selected
        self.selected_before_sharding: int | None = None  # the whole run's, for merge-reports
        self.stop_reason: str | None = None  # what stopped the session early, if anything
        self.written: dict[str, Path] = {}  # what finish_run wrote, for the summary

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

    @property
    def context(self) -> str:
        return self.options.context or (self.suite.context if self.suite else "question")

    def use_suite(self, suite: Suite) -> None:
        self.suite = suite
        self.suite_info = {"name": suite.name, "source": suite.source, "cases": len(suite.cases),
                           "seed": suite.seed, "limit": suite.limit,
                           "sampling": suite.sampling if suite.limit is not None else "all"}

    def thresholds(self) -> list[Rule]:
        """CLI/ini thresholds replace the suite's for the metrics they name."""
        named = {rule.metric for rule in self.options.thresholds}
        suite_rules = [parse_rule(f"{metric}>={value}", "suite thresholds", self.options.mode_labels)
                       for metric, value in (self.suite.thresholds if self.suite else {}).items()
                       if metric not in named]
        return suite_rules + self.options.thresholds

    def editor(self):
        if self._editor is None:
            from .editors import get_editor

            self._editor = get_editor(self.options.editor)
        return self._editor

    def hparams(self, config, profile: str):
        """Architecture defaults, then the suite's `hparams.<editor>`, then `--wild-hparams`;
        checked against the model's shape, so a bad value fails the run before any edit."""
        if self._hparams is None:
            from .hparams import build_hparams, read_yaml

            editor = self.editor()
            layers = []
            if self.suite and self.options.editor in self.suite.hparams:
                origin = f"{self.suite.path or self.suite.source}: hparams.{self.options.editor}"
                layers.append((origin, self.suite.hparams[self.options.editor]))
            if self.options.hparams_file is not None:
                layers.append((str(self.options.hparams_file), read_yaml(self.options.hparams_file, "hyperparameters")))
            shape = self.checked_model()[2]
            self._hparams = build_hparams(editor.hparams_type, editor.defaults(config, profile), layers, shape)
        return self._hparams

    def loaded(self):
        if self._loaded is None:
            from .editors.api import EditorCache, EditorState
            from .model import choose_cpu_threads, load_model

            self._loaded = load_model(self.options.model, self.options.device, self.options.dtype,
                                      self.options.trust_remote_code, self.options.device_map)
            choose_cpu_threads(self._loaded.model, self._loaded.device)
            self.editor_cache = EditorCache(self._loaded.model)
            self.editor_state = EditorState()  # the run's one sequence: each edit is restored before the next
            self.model_info = {
                "spec": self._loaded.spec,
                "profile": self._loaded.profile,
                "fingerprint": self.editor_cache.identity,
                "dtype": self._loaded.dtype,
                "architecture": self._loaded.model.config.model_type,
            }
        return self._loaded

    def evaluator(self):
        if self._evaluator is None:
            from .evaluation import Evaluator

            loaded = self.loaded()
            hparams = self.hparams(loaded.model.config, loaded.profile)
            settings = Settings(self.options.modes, self.context, self.options.metric, self.options.stop_rule)
            prefix = self.editor().prefix
            edit_prefix = prefix(loaded.model, loaded.tokenizer, hparams, self.editor_cache) if prefix else 0
            self._evaluator = Evaluator(loaded.model, loaded.tokenizer, settings, edit_prefix=edit_prefix)
        return self._evaluator

    def start(self, cases: list[Case]) -> None:
        """Load everything and compute the unedited answers for all cases this process runs."""
        self.evaluator().prepare(cases)

    def plan_batches(self, dropped: set[str]) -> None:
        """Group the suite's cases (in suite order, less those --wild-only-failed dropped)
        into edit batches of --wild-batch-size. Fixed before -k or sharding select, so a
        case is always edited together with the same others."""
        kept = [case for case in self.suite.cases if case.id not in dropped]
        size = self.options.batch_size
        self.batches = [kept[i : i + size] for i in range(0, len(kept), size)]
        self.batch_of = {case.id: index for index, batch in enumerate(self.batches) for case in batch}

    def evaluate(self, case: Case) -> dict:
        """The case's row. With batch editing, the first case of a batch to run edits the
        whole batch once and keeps the other rows for their own tests."""
        if case.id not in self._pending:
            import torch

            loaded = self.loaded()
            evaluator = self.evaluator()
            batch = self.batches[self.batch_of[case.id]] if self.batches else [case]

            def apply_edit(cases: list[Case]):
                from .editors.api import edit

                torch.manual_seed(self.options.seed)
                return edit(self.editor(), loaded.model, loaded.tokenizer, cases, self._hparams,
                            cache=self.editor_cache, state=self.editor_state)

            for row in evaluator.evaluate(batch, apply_edit):
                self._pending[row["id"]] = row
        return self._pending.pop(case.id)

    def failures(self, row: dict) -> list[str]:
        """Messages for each threshold the case misses, saying what was asked, expected
        and generated, and what teacher forcing would have reported."""
        messages = []
        for rule in self.thresholds():
            mode = rule.mode or self.options.primary_mode
            scores = row["modes"].get(mode, {})
            observed = scores.get(rule.metric)
            if observed is None or rule.holds(observed):
                continue
            messages.append(self._explain(rule, mode, observed, row))
        return messages

    def _explain(self, rule: Rule, mode: str, observed: float, row: dict) -> str:
        answers = row["modes"][mode].get("answers", {})
        head = f"{rule.metric}" + ("" if mode == self.options.primary_mode else f" [{mode}]")
        if rule.metric in ("reliability", "generalization") and answers:
            asked = answers["prompt" if rule.metric == "reliability" else "rephrase"]
            forced = row["teacher_forced"].get("prompt" if rule.metric == "reliability" else "rephrase")
            if forced is None:  # the published cut left no target token to read
                note = "(teacher-forced token accuracy n/a)"
            else:
                note = f"(teacher-forced token accuracy {forced:.2f}"
                note += ": the synthetic metric would have called this a success)" if forced >= 1.0 else ")"
            return (f"{head}: asked {_q(asked.get('context', asked['question']))} expected {_q(row['target'])} "
                    f"generated {_q(asked['after'])}\n{note}")
        if rule.metric.startswith("locality") and answers:
            changed = [item for item in answers["locality"] if not item["same"]] or answers["locality"]
            lines = [f"{head} {observed:.2f} fails {rule.text}:"]
            for item in changed:
                lines.append(f"  asked {_q(item.get('context', item['question']))} before {_q(item['before'])} after {_q(item['after'])}"
                             f" (answer {_q(item['answer'])})")
            return "\n".join(lines)
        return f"{head} {observed:.3f} fails {rule.text}"

    def checked_model(self):
        """(config, profile, shape) of the model, its directory checked (no weights read)."""
        if self._checked is None:
            from .model import check_model

            self._checked = check_model(self.options.model, self.options.trust_remote_code)
        return self._checked

    def resolve_hparams(self) -> dict:
        """The editor's hyperparameters for this model, from its config alone (no weights)."""
        from dataclasses import asdict

        config, profile, _ = self.checked_model()
        return asdict(self.hparams(config, profile))

    def versions(self) -> dict:
        import importlib.metadata as metadata

        found = {"python": platform.python_version()}
        for package in ("pytest-wild", "pytest", "torch", "transformers", "tokenizers", "datasets", "syrupy"):
            try:
                found[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                found[package] = None
        return found


def _q(text: str | None) -> str:
    """A generation as shown in a failure: quoted, surrounding whitespace dropped."""
    return '"' + (text or "").strip().replace('"', '\\"') + '"'


