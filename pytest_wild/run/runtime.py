"""What one process needs to run cases, each part made on first use from what it depends on:
the model's files checked, the hyperparameters (from the checked config, so before any weight
is read), the loaded model with its editor cache, the evaluator, the edit batches, and the
per-case test's verdict. On an xdist worker, everything here is the worker's own."""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping
from dataclasses import asdict

from ..cases.case import Case, WildInputError
from ..cases.suite import Suite
from ..results.gates import Rule, parse_rule
from ..results.missed import missed_metrics
from ..scores.metrics import TEACHER_FORCED, synthetic_reading
from ..scores.record import CaseResult
from .options import Options
from .progress import Silent


class Runtime:
    def __init__(self, options: Options, suite: Suite, progress=None) -> None:
        self.options, self.suite = options, suite
        self.progress = progress or Silent()
        self._checked = self._hparams = self._loaded = self._evaluator = self._editor = None
        self.hparams_notes: list[str] = []  # published keys the editor ignores, said once in the header
        self.editor_cache = None  # the model's EditorCache, made with the model
        self.editor_state = None  # the run's one sequence of edits: each edit is restored before the next
        self.model_info: dict = {}
        self.batches: list[list[Case]] = []
        self.batch_of: dict[str, int] = {}
        self._pending: dict[str, dict] = {}
        self.sequences: dict[int | None, list[Case]] = {}  # order (None: the suite's) -> its cases, as edited
        self._sequences_ran: set[int | None] = set()
        self._sequences_stopped: dict[int | None, str] = {}  # order -> why it stopped before its end
        self.stop: Callable[[], str | None] = lambda: None  # why to stop between two edits of a sequence (SIGTERM)

    @property
    def context(self) -> str:
        from ..model.named import default_context

        return self.options.context or default_context(self.options.model, self.suite.context)

    @property
    def editor(self):
        if self._editor is None:
            from ..editors import get_editor

            editor, o = get_editor(self.options.editor), self.options
            if o.batch_size > 1 and not editor.batches:
                raise WildInputError(f"--wild-batch-size {o.batch_size}: the editor {editor.name} edits one case "
                                     "per update (its Editor declares batches=False)")
            if o.sequential and not editor.sequences:
                raise WildInputError(f"--wild-sequential {o.sequential}: the editor {editor.name} cannot keep its edits "
                                     "one after another (its Editor declares sequences=False)")
            self._editor = editor
        return self._editor

    @property
    def checked_model(self):
        """(config, profile, shape) of the model, its directory checked (no weights read)."""
        if self._checked is None:
            from ..model.load import check_model

            self._checked = check_model(self.options.model, self.options.trust_remote_code, self.progress.note)
        return self._checked

    @property
    def hparams(self):
        """Architecture defaults, then the suite's `hparams.<editor>`, then `--wild-hparams`;
        checked against the model's shape, so a bad value fails the run before any edit."""
        if self._hparams is None:
            from ..cases.files import read_yaml
            from ..editors.hparams import build_hparams, ignored_keys
            from ..model.stats import published_corpus_or_fallback

            config, profile, shape = self.checked_model
            layers = []
            if self.options.editor in self.suite.hparams:
                origin = f"{self.suite.path or self.suite.source}: hparams.{self.options.editor}"
                layers.append((origin, self.suite.hparams[self.options.editor]))
            if self.options.hparams_file is not None:
                layers.append((str(self.options.hparams_file), read_yaml(self.options.hparams_file, "hyperparameters")))
            editor = self.editor
            try:
                defaults = editor.defaults(config, profile)
            except Exception as exc:  # a plugin's code: its fault, said in one line naming it
                from ..editors import fault

                raise fault(self.options.editor, "its defaults()", exc) from None
            if not isinstance(defaults, Mapping):
                from ..editors import fault

                raise fault(self.options.editor, f"returned {type(defaults).__name__} from its defaults(), not a "
                                                 "mapping of hyperparameters")
            built = build_hparams(editor.hparams_type, defaults, layers, shape, ignored=editor.ignored)
            if editor.check_cases is not None:
                editor.check_cases(built, self.suite.cases)
            self._hparams, fallback = published_corpus_or_fallback(built)
            self.hparams_notes = ignored_keys(layers, editor.ignored) + ([fallback] if fallback else [])
        return self._hparams

    def resolved_hparams(self) -> dict:
        return asdict(self.hparams)

    @property
    def loaded(self):
        """The model and tokenizer, with the editor cache and sequence state that go with them."""
        if self._loaded is None:
            from ..editors.api import EditorCache, EditorState
            from ..model.load import choose_cpu_threads, load_model
            from ..model.named import describe_weights

            o = self.options
            with self.progress.step(f"loading {o.model or 'the bundled tinyworld model'} ({o.dtype}, device {o.device})"):
                loaded = load_model(o.model, o.device, o.dtype, o.trust_remote_code, o.device_map)
            choose_cpu_threads(loaded.model, loaded.device)
            self.editor_cache, self.editor_state = EditorCache(loaded.model), EditorState()
            self.model_info = {"spec": loaded.spec, "profile": loaded.profile,
                               "fingerprint": self.editor_cache.identity, "dtype": loaded.dtype,
                               "architecture": loaded.model.config.model_type} | describe_weights(o.model)
            self._loaded = loaded
        return self._loaded

    @property
    def evaluator(self):
        if self._evaluator is None:
            from ..scores.evaluation import Evaluator, Settings

            loaded, hparams, prefix = self.loaded, self.hparams, self.editor.prefix
            settings = Settings(self.options.modes, self.context, self.options.metric, self.options.stop_rule,
                                self.options.system_prompt, synthetic_reading(self.options.editor))
            edit_prefix = prefix(loaded.model, loaded.tokenizer, hparams, self.editor_cache) if prefix else 0
            self._evaluator = Evaluator(loaded.model, loaded.tokenizer, settings, edit_prefix=edit_prefix)
        return self._evaluator

    def start(self, cases: list[Case]) -> None:
        """Before the first case, each step shown: load the model, compute what every edit
        needs (an editor's statistics), and the unedited answers of the cases this process
        runs (a sequence computes its own, in its first case)."""
        evaluator = self.evaluator
        if self.editor.prepare is not None:
            loaded = self.loaded
            with self.progress.step(f"{self.editor.name}: what every edit needs (statistics, cached on disk)"):
                self.editor.prepare(loaded.model, loaded.tokenizer, self.hparams, self.editor_cache)
        if self.options.sequential:
            self._check_resumed_model()
            return
        with self.progress.step(f"unedited answers of {len(cases)} case{'s' if len(cases) != 1 else ''}"):
            evaluator.prepare(cases)

    @property
    def run_directory(self):
        from ..sequence.rundir import RunDirectory

        o = self.options
        return RunDirectory(o.run_dir, "--wild-resume" if o.resume else "--wild-run-dir")

    def sequence_identity(self, selection: dict) -> dict:
        """What a sequence's results depend on, as a run directory records it (the model's
        weights are checked by their fingerprint when they are loaded)."""
        import hashlib
        import json

        o = self.options
        cases = json.dumps([case.as_record() for case in self.suite.cases], sort_keys=True)
        identity = {"model": {"spec": o.model or "tinyworld", "dtype": o.dtype}, "editor": o.editor,
                    "hparams": self.resolved_hparams(),
                    "suite": {"name": self.suite.name, "cases": hashlib.sha256(cases.encode()).hexdigest()},
                    "selection": selection,
                    "sequence": {"edits": o.sequential, "batch_size": o.batch_size, "checkpoints": list(o.checkpoints),
                                 "orders": o.orders, "seed": o.seed},
                    "evaluation": {"modes": list(o.mode_labels), "metric": o.metric, "context": self.context}
                    | ({"system_prompt": o.system_prompt} if o.system_prompt is not None else {})}
        return json.loads(json.dumps(identity))  # tuples as lists, as read back

    def open_run_directory(self, selection: dict) -> None:
        """--wild-run-dir: record the run; --wild-resume: check it is the recorded one."""
        directory, identity = self.run_directory, self.sequence_identity(selection)
        if not self.options.resume:
            directory.create(identity)
            return
        directory.check(identity)
        for order in self._orders():  # each snapshot read whole now, so a damaged one stops the run before it starts
            directory.sequence(_sequence_name(order)).latest()

    def _check_resumed_model(self) -> None:
        """A resumed sequence's snapshots were made on this model's weights, each tensor they
        hold is one of its parameters with its shape and dtype (a forged one would be
        broadcast into the weight, or fail the first case with a traceback), and the editor's
        saved state fits the model and hyperparameters (its `check_state`)."""
        if not self.options.resume:
            return
        from ..editors.api import StateMismatch, saved_parts

        directory, model = self.run_directory, self.editor_cache.identity
        parameters = dict(self.loaded.model.named_parameters())
        for order in self._orders():
            store = directory.sequence(_sequence_name(order))
            found = store.progress()
            if found is not None and found[1].get("model") != model:
                raise WildInputError(f"--wild-resume {directory.path}: the run there edited other model weights "
                                     f"(fingerprint {str(found[1].get('model'))[:16]}, this model's {model[:16]})")
            latest = store.latest() if found is not None else None
            for name, tensor in (latest[1] if latest else {}).items():
                where = f"--wild-resume {directory.path}: {found[0].relative_to(directory.path)}/weights.safetensors"
                if name not in parameters:
                    raise WildInputError(f"{where}: {name!r} is not a parameter of this model")
                wanted = parameters[name]
                if tuple(tensor.shape) != tuple(wanted.shape) or tensor.dtype != wanted.dtype:
                    raise WildInputError(f"{where}: {name} is {list(tensor.shape)} {str(tensor.dtype)[6:]} there, "
                                         f"{list(wanted.shape)} {str(wanted.dtype)[6:]} in this model")
            if latest and latest[2] and self.editor.check_state is not None:
                try:
                    self.editor.check_state(self.loaded.model, self.hparams, saved_parts(latest[2]))
                except StateMismatch as exc:
                    where = f"--wild-resume {directory.path}: {found[0].relative_to(directory.path)}/state.safetensors"
                    raise WildInputError(f"{where}: {exc}") from None

    def _orders(self) -> list[int | None]:
        return list(range(1, self.options.orders + 1)) if self.options.orders else [None]

    def plan_batches(self, dropped: set[str]) -> None:
        """Group the suite's cases (in suite order, less those --wild-only-failed dropped)
        into edit batches of --wild-batch-size. Fixed before -k or sharding select, so a
        case is always edited together with the same others."""
        kept = [case for case in self.suite.cases if case.id not in dropped]
        size = self.options.batch_size
        self.batches = [kept[i : i + size] for i in range(0, len(kept), size)]
        self.batch_of = {case.id: index for index, batch in enumerate(self.batches) for case in batch}

    def apply_edit(self, cases: list[Case]):
        """One update of the model for `cases`; the handle that undoes it."""
        import torch

        from ..editors.api import edit

        torch.manual_seed(self.options.seed)
        loaded = self.loaded
        return edit(self.editor, loaded.model, loaded.tokenizer, cases, self.hparams,
                    cache=self.editor_cache, state=self.editor_state)

    def plan_sequence(self, cases: list[Case]) -> None:
        """The cases a sequential run edits (in suite order, after -k and the other
        selections): in that order, or with --wild-orders K in K seeded random orders."""
        import random

        if not self.options.orders:
            self.sequences = {None: cases}
            return
        for order in self._orders():
            shuffled = list(cases)
            random.Random(f"pytest-wild order {order} seed {self.options.seed}").shuffle(shuffled)
            self.sequences[order] = shuffled

    def evaluate(self, case: Case, order: int | None = None) -> CaseResult:
        """The case's row. With batch editing, the first case of a batch to run edits the
        whole batch once and keeps the other rows for their own tests; in a sequential run
        the first case of a sequence (an order) to run runs the whole sequence, and each
        case's row is its score on the sequence's final model."""
        from ..sequence.sequential import SequenceNotRun, SequenceStopped

        key = case.id if order is None else f"{case.id}@order-{order}"
        if order in self._sequences_stopped:
            raise SequenceNotRun(self._sequences_stopped[order])
        if self.options.sequential and order not in self._sequences_ran:
            self._sequences_ran.add(order)
            try:
                self._pending |= {row.id: row for row in self._run_sequence(order)}
            except SequenceStopped as exc:
                self._sequences_stopped[order] = str(exc)
                raise
            except Exception:  # its other cases are not edited one by one instead, as if part of it
                which = "" if order is None else f" of order {order}"
                self._sequences_stopped[order] = f"the sequence{which} failed in the test of {key} (see there)"
                raise
        if key not in self._pending:
            batch = self.batches[self.batch_of[case.id]] if self.batches else [case]
            for row in self.evaluator.evaluate(batch, self.apply_edit):
                self._pending[row.id] = row
        return self._pending.pop(key)

    def _run_sequence(self, order: int | None) -> list[CaseResult]:
        from ..sequence.sequential import run_sequence

        o = self.options
        store = self.run_directory.sequence(_sequence_name(order)) if o.run_dir is not None else None
        return run_sequence(self.sequences[order], self.evaluator, self.apply_edit, self.editor_state, o.batch_size,
                            o.checkpoints, self.suite.perplexity_text, self.progress, store=store,
                            model=self.editor_cache.identity, save_every=o.save_every, order=order,
                            resume=self._resume_state if self.editor.resume else None, stop=self.stop)

    def _resume_state(self) -> None:
        self.editor.resume(self.loaded.model, self.hparams, self.editor_state)

    def thresholds(self) -> list[Rule]:
        """CLI/ini thresholds replace the suite's for the metrics they name. Under the judge, a
        suite's thresholds on reliability and generalization are left to the gates: a case's
        test runs before the judge grades."""
        named = {rule.metric for rule in self.options.thresholds}
        if self.options.metric == "judge":
            named |= {"reliability", "generalization"}
        suite_rules = [parse_rule(f"{metric}>={value}", "suite thresholds", self.options.mode_labels)
                       for metric, value in self.suite.thresholds.items() if metric not in named]
        return suite_rules + self.options.thresholds

    def failures(self, row: CaseResult) -> list[str]:
        """Messages for each threshold the case misses, saying what was asked, expected
        and generated, and what teacher forcing would have reported."""
        messages = []
        for rule in self.thresholds():
            mode = rule.mode or self.options.primary_mode
            scores = row.modes.get(mode, {})
            observed = scores.get(rule.metric)
            if observed is None or rule.holds(observed):
                continue
            messages.append(self._explain(rule, mode, observed, row))
        if messages and row.sequence is not None:
            messages.append(sequence_note(row, self.options.primary_mode))
        return messages

    def misses(self, row: CaseResult) -> list[str]:
        """Messages for each of the table's metrics (reliability, generalization, locality)
        where the case scored below 1 in the primary mode: what the edited model got wrong,
        in the words of a failed threshold, for a case that no threshold fails."""
        mode = self.options.primary_mode
        scores = row.modes.get(mode, {})
        missed = [self._explain(Rule(None, metric, ">=", 1.0, f"{metric}>=1"), mode, scores[metric], row)
                  for metric in missed_metrics(row, mode)]
        return missed + [sequence_note(row, mode)] if missed and row.sequence is not None else missed

    def _explain(self, rule: Rule, mode: str, observed: float, row: CaseResult) -> str:
        answers = row.modes[mode].get("answers", {})
        head = f"{rule.metric}" + ("" if mode == self.options.primary_mode else f" [{mode}]")
        if rule.metric in ("reliability", "generalization") and answers:
            asked = answers["prompt" if rule.metric == "reliability" else "rephrase"]
            forced = row.teacher_forced.get("prompt" if rule.metric == "reliability" else "rephrase")
            if forced is None:  # the published cut left no target token to read
                note = "(teacher-forced token accuracy n/a)"
            else:
                note = f"(teacher-forced token accuracy {forced:.2f}"
                # under GRACE `synthetic` is the paper's free-generation reading, not this one
                called = "synthetic" if synthetic_reading(self.options.editor) == "teacher-forced" else TEACHER_FORCED
                note += f": the {called} metric would have called this a success)" if forced >= 1.0 else ")"
            return (f"{head}: asked {_q(asked.get('context', asked['question']))} expected {_q(row.target)} "
                    f"generated {_q(asked['after'])}\n{note}")
        if rule.metric.startswith("locality") and answers:
            changed = [item for item in answers["locality"] if not item["same"]] or answers["locality"]
            lines = [f"{head} {observed:.2f} fails {rule.text}:"]
            for item in changed:
                lines.append(f"  asked {_q(item.get('context', item['question']))} before {_q(item['before'])} after {_q(item['after'])}"
                             f" (answer {_q(item['answer'])})")
            return "\n".join(lines)
        return f"{head} {observed:.3f} fails {rule.text}"


def _sequence_name(order: int | None) -> str:
    """A sequence's directory in the run directory."""
    return "sequence" if order is None else f"order-{order}"


def versions() -> dict:
    """The versions of what produced the numbers, for the report."""
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


def sequence_note(row: CaseResult, mode: str) -> str:
    """Where a case of a sequence stands: its place, whether it held right after its own
    edit, and the checkpoint where it was first lost."""
    sequence = row.sequence
    right_after = sequence["immediate"].get(mode, {}).get("reliability")
    held = "n/a" if right_after is None else ("answered" if right_after >= 1.0 else "missed")
    lost = sequence["lost_at"]
    where = f"first missed at the checkpoint after {lost} edits" if lost else "answered at every checkpoint"
    return f"(edit {sequence['position']} of the sequence: its question {held} right after its own edit; {where})"
