"""Sequential editing, the paper's second finding: the cases of a sequence edited one after
another (or batch after batch) into one model, never restored in between, and scored at
checkpoints under both published conventions:

- `immediate`: each edit scored right after it is made (EasyEdit's sequential evaluation);
- `final`: every edit made so far scored on the model as it is at the checkpoint (the
  paper's); at the last checkpoint, on the final model, which decides each case's test.

At each checkpoint also the model's general capability: exact match on the sequence's
locality questions that the unedited model answered correctly (questions about facts no edit
touches), and, where the suite names a text, its perplexity.

The curve is rebuilt on the controller from the rows alone (`curve`): each row carries its
position in the sequence, its immediate scores, its scores at every later checkpoint, and
the capability measured at each checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from ..cases.case import Case
from ..scores.answers import SCORES
from ..scores.metrics import F1_BESIDE, TABLE_METRICS
from ..scores.record import CaseResult


class SequenceStopped(Exception):
    """A stop was asked for (SIGTERM) between two edits of a sequence: the sequence ends there,
    its snapshot saved where there is a run directory, and none of its cases gets a row."""


class SequenceNotRun(SequenceStopped):
    """A case of a sequence that stopped or failed in another case's test: it has no row."""


def checkpoints_for(edits: int, asked: tuple[int, ...]) -> list[int]:
    """The asked checkpoints a sequence of `edits` edits reaches, and always its last edit."""
    return sorted({c for c in asked if c <= edits} | {edits})


class Kept:
    """The tensors a sequence's edits touched, as they were before its first edit: what the
    sequence restores when it ends (so the next sequence, another order, starts from the
    unedited model) and the set a run directory saves. Each edit's handle is dropped once its
    originals are taken, so memory holds one copy of the touched tensors however long the
    sequence."""

    def __init__(self, model) -> None:
        self._params = dict(model.named_parameters())
        self.originals: dict = {}

    def keep(self, handle) -> None:
        for name in handle.names:
            self.originals.setdefault(name, handle.original(name))

    def current(self) -> dict:
        """The touched tensors as they are now."""
        return {name: self._params[name].detach() for name in self.originals}

    def load(self, saved: dict) -> None:
        """Put a snapshot's tensors into the (unedited) model."""
        import torch

        unknown = sorted(set(saved) - set(self._params))
        if unknown:
            raise ValueError(f"the snapshot names {unknown[0]!r}, which this model does not have")
        with torch.no_grad():
            for name, value in saved.items():
                self.originals.setdefault(name, self._params[name].detach().clone())
                self._params[name].copy_(value)

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for name, original in self.originals.items():
                self._params[name].copy_(original)
        self.originals.clear()


class Log:
    """What a sequence has measured so far, by case id: its scores right after its own edit,
    at each checkpoint reached since, the capability at each checkpoint, its timing. As JSON
    it is a run directory's `progress.json` (checkpoints as strings, as in the report)."""

    def __init__(self, data: dict | None = None) -> None:
        data = data or {}
        self.immediate: dict[str, dict] = data.get("immediate", {})
        self.at: dict[str, dict[str, dict]] = data.get("checkpoints", {})
        self.capability: dict[str, dict] = data.get("capability", {})
        self.timing: dict[str, dict] = data.get("timing", {})

    def as_json(self, done: int, model: str) -> dict:
        return {"done": done, "model": model, "immediate": self.immediate, "checkpoints": self.at,
                "capability": self.capability, "timing": self.timing}


def run_sequence(cases: list[Case], evaluator, apply_edit: Callable, state, batch_size: int, asked: tuple[int, ...],
                 perplexity_text: list[str] | None, progress, *, store=None, model: str = "", save_every: int = 100,
                 order: int | None = None, resume: Callable[[], None] | None = None,
                 stop: Callable[[], str | None] = lambda: None) -> list[CaseResult]:
    """Edit `cases` in order into the model, score them at the checkpoints; every case's row
    on the final model, with its `sequence` entry. With a `store` (a run directory), a
    snapshot every `save_every` edits and at each checkpoint, and a sequence that has one
    continues from it (`resume` then puts the loaded state back on the model). Before each
    edit `stop()` is asked whether to go on: a reason ends the sequence there with
    `SequenceStopped`, after a snapshot in the store (a CI cancels with SIGTERM and kills
    seconds later; a sequence can take hours). The model and the editor's `state` are restored
    at the end."""
    unfit = evaluator.rows_now([case for case in cases if evaluator.not_evaluable(case)])
    cases = [case for case in cases if not evaluator.not_evaluable(case)]  # never edited into the model
    if not cases:
        return unfit
    checkpoints = checkpoints_for(len(cases), asked)
    evaluator.prepare(cases)
    probe = _capability_probe(evaluator, cases)
    primary = evaluator.settings.modes[0]
    judged = evaluator.settings.metric == "judge"  # its answers are kept for the judge
    kept, log, done, final = Kept(evaluator.model), Log(), 0, None
    label = "" if order is None else f"order {order}: "
    try:
        found = store.latest() if store is not None else None
        if found is not None:
            saved, weights, saved_state = found
            log, done = Log(saved), int(saved["done"])
            kept.load(weights)
            state.load_state_dict(saved_state)
            if resume is not None:
                resume()
            progress.note(f"{label}resumed after {done} of {len(cases)} edits")
        paced = None  # (time, edits done) after this process's first update, which pays the one-time costs
        saved_at = done
        for start in range(done, len(cases), batch_size):
            reason = stop()
            if reason:
                if store is not None and done > saved_at:
                    store.save(done, log.as_json(done, model), kept.current(), state.state_dict())
                which = "" if order is None else f" of order {order}"
                kept_in = "; its snapshot is in the run directory (--wild-resume continues it)" if store and done else ""
                raise SequenceStopped(f"{reason}: the sequence{which} stopped after {done} of {len(cases)} edits{kept_in}")
            batch = cases[start : start + batch_size]
            before_edit = time.perf_counter()
            kept.keep(apply_edit(batch))  # kept on the model: a sequence never restores between edits
            edited = time.perf_counter()
            done += len(batch)
            for row in evaluator.rows_now(batch):
                log.immediate[row.id] = _scores(row, judged)
            answered = time.perf_counter()
            for case in batch:  # as a single-edit run's timing: one update's cost shared by its cases
                log.timing[case.id] = {"edit_seconds": (edited - before_edit) / len(batch),
                                       "evaluate_seconds": (answered - edited) / len(batch),
                                       "questions": (1 + (case.rephrase is not None) + len(case.locality))
                                       * len(evaluator.settings.modes)}
            reached = [c for c in checkpoints if done - len(batch) < c <= done]
            if reached:
                rows = evaluator.rows_now(cases[:done])
                for row in rows:
                    log.at.setdefault(row.id, {})[str(done)] = _scores(row, judged)
                log.capability[str(done)] = _capability(evaluator, probe, perplexity_text)
                final = {row.id: row for row in rows} if done == len(cases) else None
                progress.note(f"{label}{done} of {len(cases)} edits: " + _curve_text(rows, primary))
            if store is not None and (reached or done // save_every > (done - len(batch)) // save_every):
                store.save(done, log.as_json(done, model), kept.current(), state.state_dict())
                saved_at = done
            now = time.perf_counter()
            if paced is None:
                paced = (now, done)
                progress.live(f"{label}{done} of {len(cases)} edits, the first in {now - before_edit:.1f} s "
                              "(with the one-time costs: statistics, templates); estimating the pace")
            else:
                progress.live(f"{label}{done} of {len(cases)} edits, "
                              + _pace(done - paced[1], now - paced[0], len(cases) - done))
        if final is None:  # resumed from the snapshot of the last edit: the model is as it was then
            final = {row.id: row for row in evaluator.rows_now(cases)}
    finally:
        kept.restore()
        state.clear()
    rows = []
    for position, case in enumerate(cases, 1):
        row = final[case.id]
        row.timing = log.timing[case.id]
        row.sequence = {"position": position, "immediate": log.immediate[case.id],
                           "checkpoints": log.at[case.id], "lost_at": _lost_at(log.at[case.id], primary),
                           "capability": log.capability}
        if order is not None:
            row.id = f"{case.id}@order-{order}"
            row.sequence["order"] = order
        rows.append(row)
    return rows + unfit


def _pace(done: int, seconds: float, left: int) -> str:
    """'4.20 edits/s, about 3 min left', from the edits after the first update: the first
    pays for what is computed once (second-moment statistics, context templates), and an
    estimate that counted it read 'about 2.3 h left' after edit 1 of a run that took minutes."""
    if done == 0 or seconds <= 0:
        return "starting"
    rate = done / seconds
    eta = left / rate
    when = f"{eta:.0f} s" if eta < 120 else f"{eta / 60:.0f} min" if eta < 7200 else f"{eta / 3600:.1f} h"
    return f"{rate:.2f} edits/s, about {when} left"


def _scores(row: CaseResult, keep_answers: bool) -> dict:
    """mode -> the table's metrics, for one case at one moment, and the token F1 of the same
    answers where the row has it (modes that answer); with `keep_answers` (a judge run) also
    the edit answers given then, which the judge grades at the end of the run (judge.grading)."""
    found = {}
    for mode, scores in row.modes.items():
        found[mode] = {metric: scores.get(metric) for metric in TABLE_METRICS}
        found[mode] |= {metric: scores[metric] for metric in F1_BESIDE if metric in scores}
        answers = scores.get("answers") or {}
        kept = {which: {"after": answers[which]["after"]} for which in ("prompt", "rephrase") if which in answers}
        if keep_answers and kept:  # modes without answers (synthetic) keep none
            found[mode]["answers"] = kept
    return found


def recount_lost(rows: list[CaseResult], mode: str) -> None:
    """Each sequence row's `lost_at` again, once the judge has graded its checkpoints."""
    for row in rows:
        if row.sequence is not None:
            row.sequence["lost_at"] = _lost_at(row.sequence["checkpoints"], mode)


def _lost_at(at: dict[str, dict], mode: str) -> int | None:
    """The first checkpoint where the case's edit no longer held (reliability below 1)."""
    for checkpoint in sorted(at, key=int):
        reliability = at[checkpoint].get(mode, {}).get("reliability")
        if reliability is not None and reliability < 1.0:
            return int(checkpoint)
    return None


def _curve_text(rows: list[CaseResult], mode: str) -> str:
    values = [row.modes[mode]["reliability"] for row in rows if row.modes.get(mode)]
    return f"reliability {sum(values) / len(values):.3f}" if values else "reliability n/a"


def _capability_probe(evaluator, cases: list[Case]) -> list[tuple[str, str]]:
    """The sequence's locality questions (about facts no edit touches) that the unedited
    model answers correctly, each once."""
    pairs = sorted({(loc.question, loc.answer) for case in cases for loc in case.locality})
    before = evaluator.answers_before([question for question, _ in pairs])
    score = SCORES[evaluator.settings.metric]
    return [pair for pair, answer in zip(pairs, before) if score(answer.text, pair[1]) >= 1.0]


def _capability(evaluator, probe: list[tuple[str, str]], perplexity_text: list[str] | None) -> dict:
    score = SCORES[evaluator.settings.metric]
    answers = evaluator.engine.generate([evaluator.context(question) for question, _ in probe]) if probe else []
    found = {"questions": len(probe),
             "exact_match": (math.fsum(score(a.text, gold) for a, (_, gold) in zip(answers, probe)) / len(probe)
                             if probe else None)}
    if perplexity_text:
        found["perplexity"] = perplexity(evaluator.model, evaluator.tokenizer, perplexity_text)
    return found


def perplexity(model, tokenizer, lines: list[str], batch_size: int = 32) -> float:
    """exp of the mean negative log-likelihood per predicted token over `lines`, each line
    scored on its own (right-padded, padding masked out)."""
    import torch

    total, count = 0.0, 0
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.no_grad():
        for start in range(0, len(lines), batch_size):
            encoded = [tokenizer(line)["input_ids"] for line in lines[start : start + batch_size]]
            longest = max(len(ids) for ids in encoded)
            ids = torch.full((len(encoded), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(encoded), longest), dtype=torch.long)
            for row, tokens in enumerate(encoded):
                ids[row, : len(tokens)] = torch.tensor(tokens)
                mask[row, : len(tokens)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
            picked = logprobs.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
            kept = mask[:, 1:].to(device).bool()
            total -= float(picked[kept].double().sum())
            count += int(kept.sum())
    return math.exp(total / count) if count else float("nan")


def curve(rows: list[CaseResult]) -> list[dict]:
    """Per checkpoint, over the edits made by then: the mean of each metric under `final`
    (scored on the model at the checkpoint) and `immediate` (scored right after each edit),
    for every mode, and the capability measured there. With --wild-orders, the mean over the
    orders' curves, and each value's `spread` over them (sd, min, max)."""
    by_order = curves_by_order(rows)
    if len(by_order) < 2:
        return next(iter(by_order.values()), [])
    return _combine(list(by_order.values()))


def curves_by_order(rows: list[CaseResult]) -> dict[str, list[dict]]:
    """Each sequence's own curve, by its order ("suite" for the suite's order)."""
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        if row.sequence is not None:
            grouped.setdefault(str(row.sequence.get("order", "suite")), []).append(row)
    return {order: _curve(found) for order, found in sorted(grouped.items(), key=lambda item: _order_key(item[0]))}


def _order_key(order: str) -> tuple[int, str]:
    return (int(order), "") if order.isdigit() else (0, order)


def _curve(rows: list[CaseResult]) -> list[dict]:
    checkpoints = sorted({int(c) for row in rows for c in row.sequence["checkpoints"]})
    capability = next(iter(rows)).sequence["capability"]
    points = []
    for checkpoint in checkpoints:
        made = [row for row in rows if row.sequence["position"] <= checkpoint]
        points.append({"edits": checkpoint,
                       "final": _means([row.sequence["checkpoints"][str(checkpoint)] for row in made]),
                       "immediate": _means([row.sequence["immediate"] for row in made]),
                       "capability": capability.get(str(checkpoint), {})})
    return points


def _combine(curves: list[list[dict]]) -> list[dict]:
    """The orders' curves as one: every number the mean over the orders, with its spread."""
    combined = []
    for points in zip(*curves):
        point: dict = {"edits": points[0]["edits"], "orders": len(points), "spread": {}}
        for part in ("final", "immediate"):
            point[part], point["spread"][part] = {}, {}
            for mode in sorted({mode for p in points for mode in p[part]}):
                means, spread = _over([p[part].get(mode, {}) for p in points])
                point[part][mode], point["spread"][part][mode] = means, spread
        point["capability"], point["spread"]["capability"] = _over([p["capability"] for p in points], keep=("questions",))
        combined.append(point)
    return combined


def _over(values: list[dict], keep: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Per key: the mean over `values` and {sd, min, max} (None where any is missing)."""
    means, spread = {}, {}
    for key in sorted({key for value in values for key in value}):
        found = [value.get(key) for value in values]
        if key in keep:
            means[key] = found[0]
            continue
        if any(v is None for v in found):
            means[key], spread[key] = None, None
            continue
        mean = math.fsum(found) / len(found)
        sd = math.sqrt(math.fsum((v - mean) ** 2 for v in found) / (len(found) - 1)) if len(found) > 1 else 0.0
        means[key], spread[key] = mean, {"sd": sd, "min": min(found), "max": max(found)}
    return means, spread


def _means(scored: list[dict]) -> dict:
    out: dict[str, dict[str, float | None]] = {}
    for mode in sorted({mode for scores in scored for mode in scores}):
        for metric in TABLE_METRICS + F1_BESIDE:
            base = metric.removesuffix("_f1")
            kept = [metric in s[mode] for s in scored if mode in s and s[mode].get(base) is not None]
            if metric != base and not (kept and all(kept)):
                continue  # not kept, or (part of) a sequence recorded before F1 was: no mean over a part of it
            values = [s[mode][metric] for s in scored if s.get(mode, {}).get(metric) is not None]
            out.setdefault(mode, {})[metric] = math.fsum(values) / len(values) if values else None
    return out


def kept_f1(points: list, mode: str) -> bool:
    """Whether a curve kept F1 beside its metrics in `mode` (runs before it did have none); a
    malformed curve (a report from elsewhere) reads as none, and is reported where its rows are read."""
    try:
        return any(f"{metric}_f1" in point[convention][mode] for point in points
                   for convention in ("final", "immediate") for metric in TABLE_METRICS)
    except (KeyError, TypeError, AttributeError):
        return False


def curve_lines(points: list[dict], mode: str) -> list[str]:
    """The curve as a table that fits 80 columns: one line per checkpoint and convention;
    over several orders, each cell is the mean ± the standard deviation across them."""
    orders = points[0].get("orders") if points else None
    width, digits = (10, 2) if orders else (8, 3)
    head = (f"{'edits':>6}  {'convention':<10} {'reliab.':>{width}} {'general.':>{width}} {'locality':>{width}}  "
            f"{'capab. EM':>{width + 1}} {'perplexity':>{width + 2}}")
    lines = [f"sequence ({mode}), edits kept: `final` scores the edits made so far on the model",
             "at the checkpoint, `immediate` each right after its own edit"]
    if orders:
        lines.append(f"mean ± sd over {orders} seeded orders of the same edits")
    lines += [head, "-" * len(head)]

    def cell(point, part, key, cell_width, digits=digits) -> str:
        value = (point[part].get(mode, {}) if part != "capability" else point[part]).get(key)
        if value is None:
            return f"{'n/a':>{cell_width}}"
        if not orders:
            return f"{value:>{cell_width}.{digits}f}"
        spread = (point["spread"][part].get(mode, {}) if part != "capability" else point["spread"][part]).get(key)
        text = f"{value:.{digits}f}±{spread['sd']:.{digits}f}"
        return f"{text:>{cell_width}}"

    with_f1 = kept_f1(points, mode)
    if with_f1:
        lines.insert(len(lines) - 2, "each `F1` line: the token F1 of the same answers")
    for point in points:
        for convention in ("final", "immediate"):
            capability = (f"{cell(point, 'capability', 'exact_match', width + 1)} "
                          f"{cell(point, 'capability', 'perplexity', width + 2, 2)}"
                          if convention == "final" else f"{'n/a':>{width + 1}} {'n/a':>{width + 2}}")
            lines.append(f"{point['edits']:>6}  {convention:<10} {cell(point, convention, 'reliability', width)} "
                         f"{cell(point, convention, 'generalization', width)} {cell(point, convention, 'locality', width)}  "
                         + capability)
            if with_f1:
                lines.append(f"{'':>6}  {'  F1':<10} " + " ".join(cell(point, convention, f"{metric}_f1", width)
                                                               for metric in TABLE_METRICS))
    return lines
