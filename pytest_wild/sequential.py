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

from .cases import Case
from .metrics import TABLE_METRICS
from .scores import SCORES


def checkpoints_for(edits: int, asked: tuple[int, ...]) -> list[int]:
    """The asked checkpoints a sequence of `edits` edits reaches, and always its last edit."""
    return sorted({c for c in asked if c <= edits} | {edits})


def run_sequence(cases: list[Case], evaluator, apply_edit: Callable, batch_size: int, asked: tuple[int, ...],
                 perplexity_text: list[str] | None, progress) -> list[dict]:
    """Edit `cases` in order into the model, score them at the checkpoints; every case's row
    on the final model, with its `sequence` entry."""
    unfit = [row for row in evaluator.rows_now([case for case in cases if evaluator.not_evaluable(case)])]
    cases = [case for case in cases if not evaluator.not_evaluable(case)]  # never edited into the model
    if not cases:
        return unfit
    checkpoints = checkpoints_for(len(cases), asked)
    evaluator.prepare(cases)
    probe = _capability_probe(evaluator, cases)
    primary = evaluator.settings.modes[0]
    immediate: dict[str, dict] = {}
    at: dict[str, dict[int, dict]] = {case.id: {} for case in cases}
    capability: dict[int, dict] = {}
    final: dict[str, dict] = {}
    timing: dict[str, dict] = {}
    started, done = time.perf_counter(), 0
    for start in range(0, len(cases), batch_size):
        batch = cases[start : start + batch_size]
        before_edit = time.perf_counter()
        apply_edit(batch)  # kept: a sequence never restores
        edited = time.perf_counter()
        done += len(batch)
        for row in evaluator.rows_now(batch):
            immediate[row["id"]] = _scores(row)
        answered = time.perf_counter()
        for case in batch:  # as a single-edit run's timing: one update's cost shared by its cases
            timing[case.id] = {"edit_seconds": (edited - before_edit) / len(batch),
                               "evaluate_seconds": (answered - edited) / len(batch),
                               "questions": (1 + (case.rephrase is not None) + len(case.locality))
                               * len(evaluator.settings.modes)}
        reached = [c for c in checkpoints if done - len(batch) < c <= done]
        if reached:
            rows = evaluator.rows_now(cases[:done])
            for row in rows:
                at[row["id"]][done] = _scores(row)
            capability[done] = _capability(evaluator, probe, perplexity_text)
            if done == len(cases):
                final = {row["id"]: row for row in rows}
            progress.note(f"{done} of {len(cases)} edits ({done / (time.perf_counter() - started):.2f} per s): "
                          + _curve_text(rows, primary))
    for position, case in enumerate(cases, 1):
        row = final[case.id]
        row["timing"] = timing[case.id]
        row["sequence"] = {"position": position, "immediate": immediate[case.id],
                           "checkpoints": {str(c): scores for c, scores in at[case.id].items()},
                           "lost_at": _lost_at(at[case.id], primary),
                           "capability": {str(c): found for c, found in capability.items()}}
    return [final[case.id] for case in cases] + unfit


def _scores(row: dict) -> dict:
    """mode -> the table's metrics, for one case at one moment."""
    return {mode: {metric: scores.get(metric) for metric in TABLE_METRICS}
            for mode, scores in row.get("modes", {}).items()}


def _lost_at(at: dict[int, dict], mode: str) -> int | None:
    """The first checkpoint where the case's edit no longer held (reliability below 1)."""
    for checkpoint in sorted(at):
        reliability = at[checkpoint].get(mode, {}).get("reliability")
        if reliability is not None and reliability < 1.0:
            return checkpoint
    return None


def _curve_text(rows: list[dict], mode: str) -> str:
    values = [row["modes"][mode]["reliability"] for row in rows if row.get("modes", {}).get(mode)]
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


def curve(rows: list[dict]) -> list[dict]:
    """Per checkpoint, over the edits made by then: the mean of each metric under `final`
    (scored on the model at the checkpoint) and `immediate` (scored right after each edit),
    for every mode, and the capability measured there."""
    rows = [row for row in rows if "sequence" in row]
    if not rows:
        return []
    checkpoints = sorted({int(c) for row in rows for c in row["sequence"]["checkpoints"]})
    capability = next(iter(rows))["sequence"]["capability"]
    points = []
    for checkpoint in checkpoints:
        made = [row for row in rows if row["sequence"]["position"] <= checkpoint]
        point = {"edits": checkpoint, "final": _means([row["sequence"]["checkpoints"][str(checkpoint)] for row in made]),
                 "immediate": _means([row["sequence"]["immediate"] for row in made]),
                 "capability": capability.get(str(checkpoint), {})}
        points.append(point)
    return points


def _means(scored: list[dict]) -> dict:
    out: dict[str, dict[str, float | None]] = {}
    for mode in sorted({mode for scores in scored for mode in scores}):
        for metric in TABLE_METRICS:
            values = [s[mode][metric] for s in scored if s.get(mode, {}).get(metric) is not None]
            out.setdefault(mode, {})[metric] = math.fsum(values) / len(values) if values else None
    return out


def curve_lines(points: list[dict], mode: str) -> list[str]:
    """The curve as a table that fits 80 columns: one line per checkpoint and convention."""
    head = f"{'edits':>6}  {'convention':<10} {'reliab.':>8} {'general.':>8} {'locality':>8}  {'capab. EM':>9} {'perplexity':>10}"
    lines = [f"sequence ({mode}), edits kept: `final` scores the edits made so far on the model",
             "at the checkpoint, `immediate` each right after its own edit", head, "-" * len(head)]

    def cell(value, width=8, digits=3) -> str:
        return f"{value:>{width}.{digits}f}" if value is not None else f"{'n/a':>{width}}"

    for point in points:
        for convention in ("final", "immediate"):
            means = point[convention].get(mode, {})
            capability = point["capability"] if convention == "final" else {}
            lines.append(f"{point['edits']:>6}  {convention:<10} {cell(means.get('reliability'))} "
                         f"{cell(means.get('generalization'))} {cell(means.get('locality'))}  "
                         f"{cell(capability.get('exact_match'), 9)} {cell(capability.get('perplexity'), 10, 2)}")
    return lines
