"""Grade a run's answers with the judge: at the end of the run, on the process that gathers
the results, every answer at once, so the server sees the whole run's requests concurrently
(or the local judge whole batches) and the cache is read once.

What is graded: under every mode that generates answers, the edit question's and the
rephrase's answer against the target, and each locality answer against its own answer. A
verdict becomes the answer's `score` (1 CORRECT, 0 INCORRECT, none when unjudged) and so
`reliability` and `generalization`; `locality` keeps its token-identity rule and
`locality_judge` is the judge's share of correct locality answers beside it. Exact match and
F1 of the edit answers stay beside the verdict (`reliability_em`, `reliability_f1`, ...), so a
reader sees where they disagree. An unjudged answer counts neither way: its metric leaves
the case out, and the run says how many and why. In a sequence, the edit answers given right
after each edit and at each checkpoint are graded too, so its curve is the judge's (the
capability probe keeps its exact match, as its name says).

Until this runs, a judge run's answers carry exact match (what each case's test reads as it
runs)."""

from __future__ import annotations

from collections import Counter

from ..scores.answers import exact_match, f1
from ..scores.record import CaseResult
from .grader import UNJUDGED, Answer, Verdict

EDIT_ANSWERS = {"prompt": "reliability", "rephrase": "generalization"}
SHOWN = 5  # disagreements and unjudged answers the summary lists


def graded_items(rows: list[CaseResult]) -> list[tuple[dict, str, dict, Answer]]:
    """(the mode's scores, which answer, its item, what the judge is asked) for every answer,
    a sequence's answers at each checkpoint and right after each edit included."""
    found = []
    for row in rows:
        for moment in _moments(row):
            for scores in moment.values():
                for which, item in (scores.get("answers") or {}).items():
                    question = row.prompt if which == "prompt" else row.rephrase
                    found.append((scores, which, item, Answer(question, row.target, item["after"])))
        for scores in row.modes.values():
            answers = scores.get("answers") or {}
            for which in EDIT_ANSWERS:
                if which in answers:
                    item = answers[which]
                    found.append((scores, which, item, Answer(item["question"], row.target, item["after"])))
            for item in answers.get("locality", []):
                found.append((scores, "locality", item, Answer(item["question"], item["answer"], item["after"])))
    return found


def grade(rows: list[CaseResult], judge) -> dict:
    """Ask `judge` for every answer's verdict, write the verdicts into the rows and their
    metrics, and return what was asked: answers, how many from the cache, how many asked, the
    requests sent for them (attempts, retries included), the retries, and the attempts that got
    no usable reply by reason (those that never connected never reached the server)."""
    found = graded_items(rows)
    verdicts = judge.judge([answer for *_, answer in found])
    _apply(found, verdicts)
    return {"answers": len(found), "from_cache": sum(v.cached for v in verdicts), "asked": judge.asked,
            "requests": judge.requests, "retries": judge.retries_sent,
            "failed_attempts": dict(sorted(judge.failed_attempts.items()))}


def grade_unavailable(rows: list[CaseResult], reason: str) -> dict:
    """Every answer unjudged with `reason` (the judge could not be opened)."""
    found = graded_items(rows)
    _apply(found, [Verdict(None, reason)] * len(found))
    return {"answers": len(found), "from_cache": 0, "asked": 0, "requests": 0, "retries": 0, "failed_attempts": {}}


def _apply(found: list[tuple[dict, str, dict, Answer]], verdicts: list[Verdict]) -> None:
    for (_, which, item, answer), verdict in zip(found, verdicts):
        item["judge"] = verdict.verdict or UNJUDGED
        if verdict.unjudged:
            item["judge_reason"] = verdict.reason
        if which in EDIT_ANSWERS:
            item["score"] = None if verdict.unjudged else float(verdict.verdict == "CORRECT")
            item.setdefault("em", exact_match(answer.prediction, answer.gold))
            item.setdefault("f1", f1(answer.prediction, answer.gold))
    for scores in {id(scores): scores for scores, *_ in found}.values():
        _metrics(scores)


def _moments(row: CaseResult) -> list[dict]:
    """A sequence row's scores right after its edit and at each checkpoint (mode -> scores)."""
    sequence = row.sequence or {}
    return [sequence["immediate"], *sequence["checkpoints"].values()] if sequence else []


def _metrics(scores: dict) -> None:
    answers = scores["answers"]
    for which, metric in EDIT_ANSWERS.items():
        if which in answers:
            item = answers[which]
            scores[metric] = item["score"]
            scores[f"{metric}_em"], scores[f"{metric}_f1"] = item.get("em"), item.get("f1")
    if "locality" in answers:  # a sequence's checkpoints keep the edit answers alone
        judged = [loc["judge"] == "CORRECT" for loc in answers["locality"] if loc["judge"] != UNJUDGED]
        whole = not scores.get("locality_left_out")  # a question too long for the window was not asked
        scores["locality_judge"] = sum(judged) / len(judged) if judged and whole else None


def unjudged_answers(rows: list[CaseResult]) -> list[dict]:
    """Every answer the judge gave no verdict, with why, in case order (a sequence's answers
    at its checkpoints too, their mode saying when)."""
    return [{"id": row.id, "mode": mode, "answer": which, "reason": item.get("judge_reason", "")}
            for row in sorted(rows, key=lambda r: r.id) for mode, which, item in _judged(row, moments=True)
            if item["judge"] == UNJUDGED]


def judged_modes(rows: list[CaseResult]) -> set[str]:
    """The modes whose answers went to the judge."""
    return {mode for row in rows for mode, _, _ in _judged(row)}


def unjudged_behind(rows: list[CaseResult], mode: str, metric: str) -> int:
    """How many unjudged answers the metric of `mode` leaves out."""
    which = {"reliability": ("prompt",), "generalization": ("rephrase",), "locality_judge": ("locality",)}[metric]
    return sum(1 for row in rows for m, w, item in _judged(row) if m == mode and w in which and item["judge"] == UNJUDGED)


def disagreements(rows: list[CaseResult]) -> list[dict]:
    """Edit answers where the judge's verdict and exact match differ, in case order."""
    return [{"id": row.id, "mode": mode, "answer": which, "question": item["question"], "target": row.target,
             "generated": item["after"], "judge": item["judge"], "em": item["em"], "f1": item.get("f1")}
            for row in sorted(rows, key=lambda r: r.id) for mode, which, item in _judged(row)
            if which in EDIT_ANSWERS and item["judge"] != UNJUDGED and item.get("em") is not None
            and (item["judge"] == "CORRECT") != (item["em"] >= 1.0)]


def judge_section(rows: list[CaseResult], asked: dict | None, described: dict) -> dict:
    """The report's `judge`: the judge, what was asked, the unjudged answers and the
    disagreements with exact match (all of them; the summary shows a few)."""
    unjudged = unjudged_answers(rows)
    differ = disagreements(rows)
    edit_answers = sum(1 for row in rows for _, which, item in _judged(row)
                       if which in EDIT_ANSWERS and item["judge"] != UNJUDGED)
    return described | (asked or {}) | {
        "unjudged": len(unjudged),
        "unjudged_reasons": dict(sorted(Counter(u["reason"] for u in unjudged).items())),
        "unjudged_answers": unjudged,
        "disagreements": {"count": len(differ), "of_edit_answers": edit_answers,
                          "judge_correct_em_wrong": sum(d["judge"] == "CORRECT" for d in differ),
                          "judge_incorrect_em_right": sum(d["judge"] == "INCORRECT" for d in differ),
                          "answers": differ},
    }


def asked_text(section: dict) -> str:
    """'150 answers: 0 from the cache, 150 asked in 153 requests (3 retries; failed attempts:
    2 HTTP 500, 1 connection failed (ConnectError))': every request counted by what it was."""
    text = (f"{section['answers']} answers: {section['from_cache']} from the cache, {section['asked']} asked in "
            f"{section['requests']} requests")
    failed = section.get("failed_attempts") or {}
    notes = ([f"{section['retries']} retries"] if section.get("retries") else []) + (
        ["failed attempts: " + ", ".join(f"{count} {reason}" for reason, count in failed.items())] if failed else [])
    return text + (f" ({'; '.join(notes)})" if notes else "")


def summary_lines(section: dict) -> list[str]:
    """The judge's lines in the terminal summary."""
    name = section["judge"] if section["judge"].startswith("hf:") else f"{section['model']} at {section['judge']}"
    lines = [f"judge {name} (prompt {section['prompt_version']})" + (f": {asked_text(section)}" if "answers" in section else "")]
    differ = section["disagreements"]
    if differ["count"]:
        shown = "; ".join(f"{d['id']} {d['answer']}: {d['generated']!r} for {d['target']!r} judged {d['judge']}, "
                          f"em {d['em']:.0f}, f1 {d['f1'] or 0:.2f}" for d in differ["answers"][:SHOWN])
        lines.append(f"judge and exact match disagree on {differ['count']} of {differ['of_edit_answers']} edit answers "
                     f"({differ['judge_correct_em_wrong']} judged CORRECT with em 0, "
                     f"{differ['judge_incorrect_em_right']} INCORRECT with em 1): {shown}"
                     + ("; ..." if differ["count"] > SHOWN else ""))
    elif differ["of_edit_answers"]:
        lines.append(f"judge and exact match agree on all {differ['of_edit_answers']} judged edit answers")
    if section["unjudged"]:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in section["unjudged_reasons"].items())
        ids = ", ".join(f"{u['id']} {u['answer']}" for u in section["unjudged_answers"][:SHOWN])
        lines.append(f"UNJUDGED: {section['unjudged']} answers, counted neither correct nor incorrect ({reasons}): "
                     f"{ids}{', ...' if section['unjudged'] > SHOWN else ''}")
    return lines


def _judged(row: CaseResult, moments: bool = False):
    """(mode, which answer, item) for every answer of the row that went to the judge; with
    `moments`, a sequence's answers too ("wild after 10 edits", "wild right after its edit")."""
    if moments and row.sequence:
        sequence = row.sequence
        when = {"right after its edit": sequence["immediate"]} | {f"after {n} edits": at for n, at in
                                                                  sequence["checkpoints"].items()}
        for moment, found in when.items():
            for mode, scores in found.items():
                for which, item in (scores.get("answers") or {}).items():
                    if "judge" in item:
                        yield f"{mode} {moment}", which, item
    for mode, scores in row.modes.items():
        answers = scores.get("answers") or {}
        for which in EDIT_ANSWERS:
            if which in answers and "judge" in answers[which]:
                yield mode, which, answers[which]
        for item in answers.get("locality", []):
            if "judge" in item:
                yield mode, "locality", item
