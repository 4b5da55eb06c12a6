"""Evaluate one edit: answer before, edit, answer after, restore, score. Under each mode asked
for: `wild` (the model answers on its own), `synthetic` (the published estimator, always on
the bare question: teacher-forced token accuracy, or for GRACE, as the paper's code reads it,
the target's token count generated freely and compared token by token, with the
teacher-forced reading beside it as `synthetic_tf`) and `length` (free generation of exactly
the target's token count, read as text).

Locality carries the published name for the published estimator: the paper's code scores
only the first locality question of each record (1 when the tokens generated before and
after the edit are identical; under `synthetic`, the share of teacher-forced argmax tokens
that agree). `locality_all` is ours, the same over every locality question of the case, and
`locality_em` exact match of each locality answer after the edit.

Pre-edit answers do not depend on the edit, so they are computed once, batched over all
cases, and cached. Each row also says how long its edit and the edited model's answers took
(`timing`: wall-clock seconds, and the questions asked of the edited model under every
mode). The teacher-forced reading runs only where it is used: under `synthetic`,
and to explain an answer that missed ("the synthetic metric would have called this a
success"). A case too long for the model window is never fed to the model: its row says
why it is not evaluable and has no scores. A locality question after the first that is too
long is left out of its case (window.py): the row lists it under `locality_not_evaluable`,
and the metrics over every locality question are not evaluable for that case.

An in-context editor (IKE) changes no weight: its handle's `prompt_prefix` (the new fact and
the retrieved demonstrations, ending in "Prompt: ") goes before every question asked of the
edited model, under every mode: the WILD and length answers (inside the run's context), the
teacher-forced reading (on the bare question, so on prefix + question) and the locality
questions, whose answers are compared with the unedited model's on the bare question, as
EasyEdit scores IKE. The row keeps the prefix once (`in_context`). A case whose questions do
not fit the window with the prefix, the locality questions included, is not evaluable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from ..cases.case import Case
from ..cases.contexts import make_context
from ..cases.window import locality_left_out, model_window, why_not_evaluable
from ..generation.engine import Engine, Generation
from ..model.tokens import target_ids
from .answers import SCORES, exact_match, f1, f1_beside, target_flags
from .metrics import TEACHER_FORCED, mode_label
from .record import CaseResult

@dataclass
class Settings:
    modes: tuple[str, ...] = ("wild",)
    context: str = "question"
    metric: str = "em"
    stop_rule: str = "published"
    system_prompt: str | None = None  # the system turn of the `chat` context (None: ours)
    synthetic: str = "teacher-forced"  # the editor's published synthetic reading (metrics.synthetic_reading)


class Evaluator:
    def __init__(self, model, tokenizer, settings: Settings, batch_size: int = 64, edit_prefix: int = 0) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        self.engine = Engine(model, tokenizer, settings.stop_rule, batch_size=batch_size)
        self.score = SCORES[settings.metric]
        self._before: dict[str, Generation] = {}
        self._before_fixed: dict[tuple[str, int], Generation] = {}
        self._before_forced: dict[tuple[str, str], list[int]] = {}
        self._before_generated: dict[tuple[str, str], list[int]] = {}
        self.window = model_window(model.config)
        self.edit_prefix = edit_prefix  # tokens the editor's prompts put before the case's prompt
        self._unfit: dict[str, str | None] = {}
        self._left_out: dict[str, dict[int, str]] = {}

    def context(self, question: str) -> str:
        return make_context(question, self.settings.context, self.tokenizer, self.settings.system_prompt)

    def answers_before(self, questions: list[str]) -> list[Generation]:
        """Unedited answers, batched and cached."""
        contexts = [self.context(q) for q in questions]
        missing = sorted({c for c in contexts if c not in self._before})
        for context, generation in zip(missing, self.engine.generate(missing)):
            self._before[context] = generation
        return [self._before[c] for c in contexts]

    def not_evaluable(self, case: Case) -> str | None:
        """Why the case does not fit the model window (with the token counts), or None."""
        if case.id not in self._unfit:
            self._unfit[case.id] = why_not_evaluable(case, self.tokenizer, self.window, self.context, self.edit_prefix)
        return self._unfit[case.id]

    def left_out(self, case: Case) -> dict[int, str]:
        """The locality questions after the first that do not fit the window, by index, with why."""
        if case.id not in self._left_out:
            self._left_out[case.id] = locality_left_out(case, self.tokenizer, self.window, self.context)
        return self._left_out[case.id]

    def asked(self, case: Case) -> Case:
        """The case as the model is asked it: without the locality questions left out."""
        left = self.left_out(case)
        return replace(case, locality=tuple(loc for i, loc in enumerate(case.locality) if i not in left)) if left else case

    def prepare(self, cases: list[Case]) -> None:
        """Compute every unedited answer the cases will need in a few large batches."""
        cases = [self.asked(case) for case in cases if self.not_evaluable(case) is None]
        questions = [q for case in cases for q in _questions(case)]
        if "wild" in self.settings.modes:
            self.answers_before(questions)
        if "length" in self.settings.modes:
            self._fixed_before([(loc.question, loc.answer) for case in cases for loc in case.locality])
        if "synthetic" in self.settings.modes:
            self._forced_before([(loc.question, loc.answer) for case in cases for loc in case.locality])
            if self.settings.synthetic == "generated":
                self._generated_before([(loc.question, loc.answer) for case in cases for loc in case.locality])

    def evaluate(self, cases: list[Case], apply_edit) -> list[CaseResult]:
        """Edit the cases in one update (a batch of one for single editing), answer every
        case's questions on the edited model, restore. `apply_edit(cases)` returns the
        restore handle."""
        rows = {case.id: self._unevaluable_row(case) for case in cases if self.not_evaluable(case)}
        fit = [self.asked(case) for case in cases if case.id not in rows]
        if fit:
            self.prepare(fit)
            started = time.perf_counter()
            handle = apply_edit(fit)
            edited = time.perf_counter()
            try:
                prefix = getattr(handle, "prompt_prefix", "")  # a stand-in handle of a test may have none
                for case in fit if prefix else []:
                    why = self._unfit_in_context(case, prefix)
                    if why:
                        rows[case.id] = self._unevaluable_row(case, why)
                rows |= {case.id: self._row(case, prefix=prefix) for case in fit if case.id not in rows}
            finally:
                handle.restore()
            done = time.perf_counter()
            for case in fit:  # one update's cost shared by the cases it edited
                rows[case.id].timing = {"edit_seconds": (edited - started) / len(fit),
                                           "evaluate_seconds": (done - edited) / len(fit),
                                           "questions": len(_questions(case)) * len(self.settings.modes)}
        return [rows[case.id] for case in cases]

    def rows_now(self, cases: list[Case]) -> list[CaseResult]:
        """Every case's row on the model as it is now, with no edit made or undone (a
        sequence's checkpoint): the WILD answers of all the cases in one batched pass through
        the engine, so the cost grows linearly with the number of cases."""
        rows = {case.id: self._unevaluable_row(case) for case in cases if self.not_evaluable(case)}
        fit = [self.asked(case) for case in cases if case.id not in rows]
        self.prepare(fit)
        after = {}
        if "wild" in self.settings.modes:
            contexts = sorted({self.context(q) for case in fit for q in _questions(case)})
            after = dict(zip(contexts, self.engine.generate(contexts)))
        rows |= {case.id: self._row(case, after) for case in fit}
        return [rows[case.id] for case in cases]

    def _base_row(self, case: Case) -> CaseResult:
        return CaseResult(id=case.id, source=case.source, prompt=case.prompt, target=case.target, subject=case.subject,
                          rephrase=case.rephrase, flags=target_flags(case.target, self.settings.stop_rule))

    def _unevaluable_row(self, case: Case, why: str | None = None) -> CaseResult:
        row = self._base_row(case)
        row.not_evaluable = why or self.not_evaluable(case)
        return row

    def _unfit_in_context(self, case: Case, prefix: str) -> str | None:
        """Why the case's questions, each after the editor's in-context prefix, do not fit."""
        return why_not_evaluable(case, self.tokenizer, self.window, lambda q: self.context(prefix + q),
                                 every_locality=True, note="with the editor's in-context prompt")

    def _row(self, case: Case, after: dict[str, Generation] | None = None, prefix: str = "") -> CaseResult:
        """`after`: WILD answers already generated on the current model, by context; `prefix`:
        the edit's in-context text, put before every question asked of the edited model."""
        row = self._base_row(case)
        row.in_context = prefix or None
        synthetic = "synthetic" in self.settings.modes
        forced = self._forced_accuracy(case, ("prompt", "rephrase"), prefix) if synthetic else {}
        for mode in self.settings.modes:
            if mode == "synthetic" and self.settings.synthetic == "generated":
                row.modes["synthetic"] = self._synthetic_generated(case, prefix)
                row.modes[TEACHER_FORCED] = self._synthetic(case, forced, prefix)
                continue
            if mode == "wild":
                scores = self._wild(case, forced, after, prefix)
            else:
                scores = getattr(self, f"_{mode}")(case, forced, prefix)
            if "answers" in scores and self.settings.metric != "f1":
                scores |= f1_beside(scores["answers"], case.target)
            row.modes[mode_label(mode, self.settings.stop_rule)] = scores
        row.teacher_forced = forced if synthetic else self._forced_accuracy(case, _missed(row), prefix)
        left = self.left_out(case)
        if left:
            row.locality_not_evaluable = [left[i] for i in sorted(left)]
            for scores in row.modes.values():
                scores |= {metric: None for metric in ("locality_all", "locality_em") if metric in scores}
                scores["locality_left_out"] = len(left)
        return row

    def _wild(self, case: Case, forced: dict, generated: dict[str, Generation] | None = None, prefix: str = "") -> dict:
        questions = _questions(case)
        before = self.answers_before(questions)
        contexts = [self.context(prefix + q) for q in questions]
        after = [generated[c] for c in contexts] if generated else self.engine.generate(contexts)
        result = {"prompt": self._answer(case.prompt, case.target, before[0], after[0])}
        if case.rephrase is not None:
            result["rephrase"] = self._answer(case.rephrase, case.target, before[1], after[1])
        offset = 2 if case.rephrase is not None else 1
        result["locality"] = [
            self._asked(loc.question) | {"answer": loc.answer, "before": b.text, "after": a.text,
                                         "same": a.token_ids == b.token_ids, "em_after": self.score(a.text, loc.answer)}
            for loc, b, a in zip(case.locality, before[offset:], after[offset:])
        ]
        return _metrics(result)

    def _asked(self, question: str) -> dict:
        """The question, and the text the model was given when the context changed it."""
        context = self.context(question)
        return {"question": question} | ({"context": context} if context != question else {})

    def _answer(self, question: str, target: str, before: Generation, after: Generation) -> dict:
        return self._asked(question) | {"before": before.text} | self._scored(after.text, target)

    def _scored(self, answer: str, target: str) -> dict:
        """An answer and its score; for the judge, with exact match and F1 kept beside the
        verdict it will be given at the end of the run."""
        beside = {"em": exact_match(answer, target), "f1": f1(answer, target)} if self.settings.metric == "judge" else {}
        return {"after": answer, "score": self.score(answer, target)} | beside

    def _length(self, case: Case, forced: dict, prefix: str = "") -> dict:
        asked = [(case.prompt, case.target)] + ([(case.rephrase, case.target)] if case.rephrase else [])
        lengths = [len(target_ids(self.tokenizer, self.context(prefix + q), t)) for q, t in asked]
        after = self.engine.generate_fixed([self.context(prefix + q) for q, _ in asked], lengths)
        result = {"prompt": self._asked(case.prompt) | self._scored(after[0].text, case.target)}
        if case.rephrase is not None:
            result["rephrase"] = self._asked(case.rephrase) | self._scored(after[1].text, case.target)
        pairs = [(loc.question, loc.answer) for loc in case.locality]
        before = self._fixed_before(pairs)
        loc_after = self._fixed(pairs, prefix)
        result["locality"] = [
            self._asked(q) | {"answer": a, "before": b.text, "after": n.text, "same": b.token_ids == n.token_ids,
                              "em_after": self.score(n.text, a)}
            for (q, a), b, n in zip(pairs, before, loc_after)
        ]
        return _metrics(result)

    def _synthetic(self, case: Case, forced: dict, prefix: str = "") -> dict:
        """The published teacher-forced reading: token accuracy of the target on the bare edit
        question and rephrase; locality as the share of argmax tokens on `loc + " " + loc_ans`
        that agree before and after the edit."""
        pairs = [(loc.question, loc.answer) for loc in case.locality]
        before = self._forced_before(pairs)
        after = [pred for _, pred in self.engine.teacher_forced([prefix + q for q, _ in pairs], [a for _, a in pairs])]
        agreement = [_agreement(b, a) for b, a in zip(before, after)]
        return {
            "reliability": forced["prompt"],
            "generalization": forced.get("rephrase"),
            "locality": agreement[0] if agreement else None,
            "locality_all": sum(agreement) / len(agreement) if agreement else None,
        }

    def _synthetic_generated(self, case: Case, prefix: str = "") -> dict:
        """The published synthetic reading of GRACE: on the bare edit question and rephrase,
        the share of the target's tokens (encoded alone) that the last tokens of a free greedy
        generation of that many tokens match; locality as the share of such tokens generated
        for `loc_ans`'s count on `loc` that agree before and after the edit."""
        asked = [prefix + case.prompt] + ([prefix + case.rephrase] if case.rephrase is not None else [])
        accuracy = self.engine.generated_accuracy(asked, [case.target] * len(asked))
        pairs = [(loc.question, loc.answer) for loc in case.locality]
        before = self._generated_before(pairs)
        after = [found for _, found in self.engine.generated_tokens([prefix + q for q, _ in pairs], [a for _, a in pairs])]
        agreement = [_agreement(b, a) for b, a in zip(before, after)]
        return {
            "reliability": accuracy[0],
            "generalization": accuracy[1] if case.rephrase is not None else None,
            "locality": agreement[0] if agreement else None,
            "locality_all": sum(agreement) / len(agreement) if agreement else None,
        }

    def _forced_accuracy(self, case: Case, which: tuple[str, ...], prefix: str = "") -> dict:
        """The published teacher-forced token accuracy of the target (for the edit prompt and
        the rephrase, as `which` asks), always on the bare question whatever the context (as
        the paper's code computes it)."""
        questions = {"prompt": case.prompt, "rephrase": case.rephrase}
        asked = {key: questions[key] for key in which if questions[key]}
        if not asked:
            return {}
        accuracy = self.engine.teacher_forced_accuracy([prefix + q for q in asked.values()], [case.target] * len(asked))
        return dict(zip(asked, accuracy))

    def _fixed(self, pairs: list[tuple[str, str]], prefix: str = "") -> list[Generation]:
        contexts = [self.context(prefix + q) for q, _ in pairs]
        lengths = [len(target_ids(self.tokenizer, c, a)) for c, (_, a) in zip(contexts, pairs)]
        return self.engine.generate_fixed(contexts, lengths)

    def _fixed_before(self, pairs: list[tuple[str, str]]) -> list[Generation]:
        return _remembered(self._before_fixed, pairs, self._fixed)

    def _forced_before(self, pairs: list[tuple[str, str]]) -> list[list[int]]:
        return _remembered(self._before_forced, pairs, lambda missing: [
            predicted for _, predicted in self.engine.teacher_forced([q for q, _ in missing], [a for _, a in missing])])

    def _generated_before(self, pairs: list[tuple[str, str]]) -> list[list[int]]:
        return _remembered(self._before_generated, pairs, lambda missing: [
            tokens for _, tokens in self.engine.generated_tokens([q for q, _ in missing], [a for _, a in missing])])


def _remembered(store: dict, pairs: list[tuple[str, str]], compute) -> list:
    """The unedited model's reading of each (question, answer) pair, computed once for the
    pairs not yet in `store` (in one batch, sorted so the batch does not depend on the order
    asked) and kept there."""
    missing = sorted({p for p in pairs if p not in store})
    if missing:
        store.update(zip(missing, compute(missing)))
    return [store[p] for p in pairs]


def _agreement(before: list[int], after: list[int]) -> float:
    """Share of positions where the tokens read before and after the edit agree (the
    published `np.mean(np.equal(post, pre))`); 1 when there is nothing to compare."""
    return sum(x == y for x, y in zip(before, after)) / len(before) if before else 1.0


def _questions(case: Case) -> list[str]:
    return [case.prompt] + ([case.rephrase] if case.rephrase is not None else []) + [loc.question for loc in case.locality]


def _missed(row: CaseResult) -> tuple[str, ...]:
    """The questions ("prompt", "rephrase") whose answer missed the target under some mode."""
    missed = {key for scores in row.modes.values() for key, item in scores.get("answers", {}).items()
              if key in ("prompt", "rephrase") and item["score"] < 1.0}
    return tuple(key for key in ("prompt", "rephrase") if key in missed)


def _metrics(result: dict) -> dict:
    """Per-case scores from the answers: the paper's locality (identical tokens before and
    after, on the first locality question), the same over all of them, and exact match of
    each locality answer after the edit."""
    locality = result["locality"]
    return {
        "reliability": result["prompt"]["score"],
        "generalization": result["rephrase"]["score"] if "rephrase" in result else None,
        "locality": float(locality[0]["same"]) if locality else None,
        "locality_all": sum(item["same"] for item in locality) / len(locality) if locality else None,
        "locality_em": sum(item["em_after"] for item in locality) / len(locality) if locality else None,
        "answers": result,
    }
