"""`--wild-conformance`: whether an editor keeps the protocol of docs/editor-api.md, as seven
tests collected instead of the suite's cases, each failing with what was wrong and how to
mend it.

The checks edit cases of the run's suite (by default the bundled tinyworld suite and model)
that the unedited model answers wrongly: A and B for single edits, three for a batch, twenty
for a sequence. Weights are compared by a SHA-256 digest of every parameter and buffer.
What a process computes is shared by the checks it runs (an xdist worker computes its own),
and the edits share the model's `EditorCache`, as a run's do.

Two checks need an editor whose module state is fresh: deciding that the editor is
deterministic (B edited twice gives the same weights) and that it leaks nothing (A edited and
restored, then B, gives B alone) must not depend on what earlier edits of this process left in
the module's globals. So each of those edits is made by a fresh copy of the editor: the module
that defines its `Editor` executed again (a global kept in another module is not renewed, and
then shows as nondeterminism).
"""

from __future__ import annotations

import hashlib
import importlib.util
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from ..cases.case import Case

SEQUENCE_LENGTH = 20
BATCH_SIZE = 3
MOVED = 1e-4  # a rise of the target's mean log-probability that is an effect, not rounding


class Failed(Exception):
    """A check's verdict: its message is the whole failure report."""


@dataclass
class Probe:
    """What one or more edits did, by one copy of the editor: the digests of every tensor
    after the last edit and after its restore, the names its handles saved, the last edited
    case's answers (asked after the handle's `prompt_prefix`, as a run asks them), that prefix,
    and the error if an edit raised."""

    after: dict[str, str] = field(default_factory=dict)
    restored: dict[str, str] = field(default_factory=dict)
    saved: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    target_log_probs: list[float] = field(default_factory=list)
    prefix: str = ""
    error: str | None = None


def _tensors(model) -> dict:
    return dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))


def digests(model) -> dict[str, str]:
    """Tensor name -> SHA-256 of its dtype, shape and bytes, for every parameter and buffer."""
    import torch

    found = {}
    with torch.no_grad():
        for name, tensor in sorted(_tensors(model).items()):
            data = tensor.detach().to("cpu").reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
            found[name] = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode() + data).hexdigest()
    return found


def differing(first: dict[str, str], second: dict[str, str]) -> list[str]:
    """Names whose tensors differ, or that exist in only one of the two."""
    return sorted(name for name in first.keys() | second.keys() if first.get(name) != second.get(name))


def names(found: list[str], most: int = 4) -> str:
    shown = ", ".join(found[:most])
    return shown + (f" and {len(found) - most} more" if len(found) > most else "")


def short(answer: str, most: int = 60) -> str:
    """An answer as a message quotes it: repr, cut at `most` characters."""
    return repr(answer if len(answer) <= most else answer[:most] + "...")


def raised(exc: BaseException) -> str:
    """An editor's exception in one line, with where it was raised."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (at {frame.filename}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {str(exc).strip() or '(no message)'}{where}"


def alike(first: Probe, second: Probe) -> bool:
    """Whether two probes' edits left the same weights and the same answers."""
    return not differing(first.after, second.after) and first.answers == second.answers and first.prefix == second.prefix


def no_effect(answer_before: str, answer_after: str, likely_before: float, likely_after: float) -> bool:
    """An edit that left a question's answer as it was and did not raise the target's mean
    log-probability (beyond rounding) had no effect on it."""
    return answer_after == answer_before and likely_after <= likely_before + MOVED


class Conformance:
    """One process's checks of one editor: the model, the chosen cases, and the probes,
    each computed on first use."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        loaded = runtime.loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.editor, self.hparams = runtime.editor, runtime.hparams
        self.original = digests(self.model)
        self._copy = {name: tensor.detach().to("cpu", copy=True) for name, tensor in _tensors(self.model).items()}
        self._probes: dict[str, Probe] = {}
        self._cases: list[Case] | None = None
        self.cache = runtime.editor_cache  # the model's, as a run shares it: what is kept there must not depend on an edit
        if self.editor.prepare is not None:
            self.editor.prepare(self.model, self.tokenizer, self.hparams, self.cache)

    def answers(self, cases: list[Case], prefix: str = "") -> list[str]:
        """The WILD answers to the cases' prompts on the model as it is now (after an in-context
        editor's `prefix`)."""
        evaluator = self.runtime.evaluator
        contexts = [evaluator.context(prefix + c.prompt) for c in cases]
        return [generation.text for generation in evaluator.engine.generate(contexts)]

    def target_log_probs(self, cases: list[Case], prefix: str = "") -> list[float]:
        """Each case's target, mean log-probability per token after its question (teacher
        forced; after an in-context editor's `prefix`)."""
        import torch

        from ..model.reading import reading
        from ..model.tokens import target_ids

        evaluator, found = self.runtime.evaluator, []
        with torch.no_grad():
            for case in cases:
                context = evaluator.context(prefix + case.prompt)
                prompt, target = self.tokenizer(context)["input_ids"], target_ids(self.tokenizer, context, case.target)
                ids = torch.tensor([prompt + target], device=self.model.device)
                with reading(self.model, torch.tensor([len(prompt) - 1])):  # a memory reads the prompt's end
                    logits = self.model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
                found.append(logits.log_softmax(-1).gather(1, ids[0, len(prompt) :, None]).mean().item())
        return found

    @property
    def cases(self) -> list[Case]:
        """Cases the unedited model answers wrongly, in suite order (an edit that changes nothing
        would tell nothing): A, B, the batch, then the sequence."""
        if self._cases is None:
            evaluator = self.runtime.evaluator
            fit = [evaluator.asked(case) for case in self.runtime.suite.cases if not evaluator.not_evaluable(case)]
            wanted = 2 + BATCH_SIZE + SEQUENCE_LENGTH
            candidates = fit[: 2 * wanted]
            before = self.answers(candidates)
            self._cases = [case for case, answer in zip(candidates, before) if answer.strip() != case.target.strip()]
            self._cases = self._cases[:wanted]
        return self._cases

    def case(self, index: int) -> Case:
        if len(self.cases) <= index:
            raise Failed(f"the suite {self.runtime.suite.name} has {len(self.cases)} cases the unedited model answers "
                         f"wrongly; the checks need {2 + BATCH_SIZE + SEQUENCE_LENGTH} (run them on the bundled suite)")
        return self.cases[index]

    def fresh_editor(self):
        """A copy of the editor whose module is executed anew (fresh globals)."""
        from . import find

        module_name, _, attr = find(self.editor.name).target.partition(":")
        spec = importlib.util.find_spec(module_name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, attr)

    def edit(self, editor, cases: list[Case], state=None):
        """One update, seeded as a run seeds it."""
        import torch

        from .api import edit

        torch.manual_seed(self.runtime.options.seed)
        return edit(editor, self.model, self.tokenizer, cases, self.hparams, cache=self.cache, state=state)

    def probe(self, key: str) -> Probe:
        """B alone (two fresh copies: "B", "B again"), or A restored then B ("A then B")."""
        if key not in self._probes:
            self._probes[key] = self._run_probe([self.case(0), self.case(1)] if key == "A then B" else [self.case(1)])
        return self._probes[key]

    def _run_probe(self, cases: list[Case]) -> Probe:
        from .api import EditorState

        editor, probe, state = self.fresh_editor(), Probe(), EditorState()
        for case in cases:
            try:
                handle = self.edit(editor, [case], state)
            except Exception as exc:
                probe.error = f"editing {case.id} raised {raised(exc)}"
                return probe
            probe.prefix = handle.prompt_prefix
            probe.after, probe.saved = digests(self.model), handle.names
            probe.answers = self.answers([case], probe.prefix)
            probe.target_log_probs = self.target_log_probs([case], probe.prefix)
            handle.restore()
            probe.restored = digests(self.model)
            self.put_back()  # a leak is looked for beyond what restores_the_weights_exactly reports
        return probe

    def edited(self, key: str = "B") -> Probe:
        probe = self.probe(key)
        if probe.error:
            raise Failed(probe.error)
        return probe

    def restores_exactly(self) -> bool:
        """Whether a single edit's restore is exact: a batch or a sequence whose restore is not
        exact either reports nothing more (each fault is reported by one check)."""
        probe = self.probe("B")
        return probe.error is None and not differing(probe.restored, self.original)

    def unrestored(self) -> list[str]:
        """After a batch's or a sequence's restore: the tensors it left changed, put back; empty
        when a single edit's restore is not exact either (restores_the_weights_exactly reports it)."""
        changed = differing(digests(self.model), self.original)
        self.put_back()
        return changed if changed and self.restores_exactly() else []

    def put_back(self) -> None:
        """The weights as loaded, after an edit whose restore was not exact, so the next check
        starts from them (the Conformance keeps a CPU copy of every tensor for this)."""
        import torch

        now = _tensors(self.model)
        if now.keys() != self._copy.keys():
            pytest.exit(f"wild conformance: the editor {self.editor.name} left the model's modules changed "
                        f"({names(sorted(now.keys() ^ self._copy.keys()))}); the other checks cannot run", returncode=1)
        with torch.no_grad():
            for name in differing(digests(self.model), self.original):
                now[name].copy_(self._copy[name])


def restores_the_weights_exactly(c: Conformance) -> None:
    """Restoring an edit gives every parameter and buffer back bit for bit."""
    probe, case = c.edited(), c.case(1)
    changed = differing(probe.restored, c.original)
    if changed:
        raise Failed(f"after restoring the edit of {case.id}, {len(changed)} tensor(s) differ from before the edit: "
                     f"{names(changed)}. Call handle.save([...]) on each parameter before its first write, and undo "
                     "any other change with handle.on_undo(...)")


def touches_only_what_its_handle_saves(c: Conformance) -> None:
    """Every parameter the edit changed is one its handle saved (or one the edit added; a
    changed buffer, which `handle.save` does not take, must be undone by `handle.on_undo`, and
    restores_the_weights_exactly sees whether it was)."""
    probe, case = c.edited(), c.case(1)
    parameters = {name for name, _ in c.model.named_parameters(remove_duplicate=False)}
    outside = [name for name in differing(probe.after, c.original) if name in parameters and name not in probe.saved]
    if outside:
        raise Failed(f"the edit of {case.id} changed {names(outside)}, which its handle did not save "
                     f"(it saved {names(probe.saved) or 'nothing'}): call handle.save([...]) on every parameter "
                     "the edit writes, before writing it")


def changes_the_answer_or_its_probability(c: Conformance) -> None:
    """The edit has an effect on the edited question: its answer changes, or, where a method too
    weak to flip it leaves it (FT-L's box of 5e-4 on tinyworld), the target's probability rises."""
    probe, case = c.edited(), c.case(1)
    before, (likely_before,) = c.answers([case])[0], c.target_log_probs([case])
    if no_effect(before, probe.answers[0], likely_before, probe.target_log_probs[0]):
        raise Failed(f"the edit of {case.id} had no effect on its question: asked {case.prompt!r}, answered {short(before)} "
                     f"before and after the edit (target {case.target!r}), and the target's mean log-probability per "
                     f"token went from {likely_before:.4f} to {probe.target_log_probs[0]:.4f}")


def is_deterministic(c: Conformance) -> None:
    """The same case edited twice, by two fresh copies seeded alike, gives the same weights."""
    first, second, case = c.edited("B"), c.edited("B again"), c.case(1)
    if not alike(first, second):
        changed = differing(first.after, second.after)
        raise Failed(f"two edits of {case.id} with the same seed (torch.manual_seed({c.runtime.options.seed}) before "
                     f"each, by freshly imported copies of the editor) gave different weights: {names(changed)}; "
                     f"answers {short(first.answers[0])} and {short(second.answers[0])}. Draw randomness only from torch's "
                     "default generator, which pytest-wild seeds before every edit (not from random, numpy or the clock)")


def leaks_no_state_between_edits(c: Conformance) -> None:
    """A edited and restored, then B, gives what B edited alone gives."""
    alone, again = c.edited("B"), c.edited("B again")
    if not alike(alone, again):
        pytest.skip("not checked: the editor is not deterministic (see is_deterministic), so a leak "
                    "cannot be told from chance")
    after_a = c.edited("A then B")
    first, second = c.case(0), c.case(1)
    if not alike(alone, after_a):
        changed = differing(alone.after, after_a.after)
        raise Failed(f"editing {first.id}, restoring it, then editing {second.id} gave other weights "
                     f"({names(changed) or 'none'}) and answer {short(after_a.answers[0])} than editing {second.id} alone "
                     f"({short(alone.answers[0])}): something of the first edit outlived its restore. Keep what lives "
                     "across edits in the EditorState part given to apply, undone by the handle, never in a module global")


def edits_a_batch(c: Conformance) -> None:
    """Several cases in one update: it runs, has an effect on every case's question (as
    `changes_the_answer_or_its_probability`) and restores exactly."""
    if not c.editor.batches:
        pytest.skip(f"the editor {c.editor.name} declares that it does not edit batches (Editor(batches=False))")
    cases = [c.case(2 + i) for i in range(BATCH_SIZE)]
    ids = ", ".join(case.id for case in cases)
    before, likely_before = c.answers(cases), c.target_log_probs(cases)
    try:
        handle = c.edit(c.editor, cases)
    except Exception as exc:
        raise Failed(f"editing {ids} in one update raised {raised(exc)}; an editor that cannot edit batches "
                     "declares Editor(batches=False)") from None
    after, likely_after = c.answers(cases, handle.prompt_prefix), c.target_log_probs(cases, handle.prompt_prefix)
    handle.restore()
    changed = c.unrestored()
    if changed:
        raise Failed(f"after restoring the batch edit of {ids}, {names(changed)} differ from before it")
    unmoved = [case.id for case, old, new, likely_old, likely_new in zip(cases, before, after, likely_before, likely_after)
               if no_effect(old, new, likely_old, likely_new)]
    if unmoved:
        raise Failed(f"the batch edit of {ids} had no effect on the question of {', '.join(unmoved)} (answer and "
                     "target probability as before): every case of an update must be edited")


def survives_a_sequence_of_edits(c: Conformance) -> None:
    """Twenty edits one after another on one model with one state, never restored in between:
    each runs, the weights stay finite, the state can be saved and loaded (a run directory
    does), and restoring the handles newest first gives the original weights."""
    import torch

    from .api import EditorState

    if not c.editor.sequences:
        pytest.skip(f"the editor {c.editor.name} declares that its edits cannot follow one another (Editor(sequences=False))")
    cases = [c.case(2 + BATCH_SIZE + i) for i in range(SEQUENCE_LENGTH)]
    state, handles = EditorState(), []
    try:
        for position, case in enumerate(cases, 1):
            try:
                handles.append(c.edit(c.editor, [case], state))
            except Exception as exc:
                raise Failed(f"edit {position} of a sequence of {SEQUENCE_LENGTH} ({case.id}) raised {raised(exc)}") from None
        broken = [name for name, p in c.model.named_parameters() if not torch.isfinite(p).all()]
        if broken:
            raise Failed(f"after {SEQUENCE_LENGTH} edits in a sequence, {names(broken)} hold NaN or infinite values")
        _check_state_round_trip(c, state)
    finally:
        while handles:
            handles.pop().restore()
    changed = c.unrestored()
    if changed:
        raise Failed(f"restoring the {SEQUENCE_LENGTH} edits of a sequence, newest first, left {names(changed)} "
                     "different from before the first: each handle must put back what its own edit changed")


def _check_state_round_trip(c: Conformance, state) -> None:
    """The sequence's state as a run directory keeps it: every part's tensors through
    safetensors and back into the part (`load_state_dict`), which then gives the same tensors,
    and which the editor's `check_state`, asked before a resumed sequence, accepts."""
    import torch
    from safetensors.torch import load, save

    from .api import saved_parts

    try:
        saved = load(save({key: value.contiguous() for key, value in state.state_dict().items()}))
    except Exception as exc:
        raise Failed(f"the sequence's EditorState cannot be saved: {raised(exc)}; a part that lives across edits "
                     "has state_dict() returning tensors by name, and load_state_dict()") from None
    for name, part in state.parts().items():
        own = {key.partition("/")[2]: value for key, value in saved.items() if key.partition("/")[0] == name}
        try:
            part.load_state_dict(own)
            again = part.state_dict()
        except Exception as exc:
            raise Failed(f"the state part {name!r} cannot be loaded from its own state_dict(): {raised(exc)}") from None
        if again.keys() != own.keys() or not all(torch.equal(again[key].cpu(), own[key]) for key in own):
            raise Failed(f"the state part {name!r} gives other tensors after load_state_dict() of its own state_dict()")
    if c.editor.check_state is not None:
        try:
            c.editor.check_state(c.model, c.hparams, saved_parts(saved))
        except Exception as exc:
            raise Failed(f"check_state() refuses the state the editor saved itself: {raised(exc)}; a resumed "
                         "sequence would be refused") from None


CHECKS: dict[str, Callable[[Conformance], None]] = {
    "restores_the_weights_exactly": restores_the_weights_exactly,
    "touches_only_what_its_handle_saves": touches_only_what_its_handle_saves,
    "changes_the_answer_or_its_probability": changes_the_answer_or_its_probability,
    "is_deterministic": is_deterministic,
    "leaks_no_state_between_edits": leaks_no_state_between_edits,
    "edits_a_batch": edits_a_batch,
    f"survives_a_sequence_of_{SEQUENCE_LENGTH}_edits": survives_a_sequence_of_edits,
}


class ConformanceChecks(pytest.File):
    """The checks of the run's editor, one test each (`conformance-ft-m::is_deterministic`),
    sharing one `Conformance` per process, made by the first check to run."""

    def __init__(self, *, runtime, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self._conformance: Conformance | None = None

    @property
    def conformance(self) -> Conformance:
        if self._conformance is None:
            self._conformance = Conformance(self.runtime)
        return self._conformance

    def collect(self):
        for name, check in CHECKS.items():
            yield ConformanceItem.from_parent(self, name=name, check=check)


class ConformanceItem(pytest.Item):
    def __init__(self, *, check: Callable[[Conformance], None], **kwargs) -> None:
        super().__init__(**kwargs)
        self.check = check

    def runtest(self) -> None:
        conformance = self.parent.conformance
        try:
            self.check(conformance)
        finally:
            conformance.put_back()

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, Failed):
            return f"{self.name}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"{self.parent.name}::{self.name}"
