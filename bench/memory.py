"""Memory-based editors (GRACE, WISE) on the bundled model: seconds per edit, and what reading a
memory costs at inference. Run through `python bench/editors.py --methods grace,wise`.

Per edit: `apply` of single edits at the tinyworld defaults, each restored, over N suite cases
(the first edit, which builds nothing here, is timed with the rest). Against the peer figures
the issue quotes for EasyEdit on a comparable tiny GPT-2 with one thread (GRACE 0.19 s, WISE
1.8 s per edit); those are quoted, not measured here.

Inference: the engine answers the suite's 1,080 questions with a memory of 1, 100 and 1,000
edits loaded and without it, alternately (the memory taken off and put back), 5 runs each side,
in the same process; the medians are compared. The memories are made the cheap way, which costs what a real one costs to read: GRACE's
keys from the sequential suite's questions with warm values (the layer's own output there;
that suite's facts are not the bundled suite's, so most questions asked fall outside every
radius, and every one pays the lookup); WISE's edits by its own editor with 1 optimisation
step each.
"""

from __future__ import annotations

import statistics
import time

import torch

PEER_S_PER_EDIT = {"grace": 0.19, "wise": 1.8}  # EasyEdit, tiny GPT-2, one thread (issue 16)
MEMORY_SIZES = (1, 100, 1000)


def questions_of(cases) -> list[str]:
    return [q for case in cases for q in (case.prompt, case.rephrase, *(loc.question for loc in case.locality))]


def engine_seconds(engine, questions: list[str], runs: int = 3) -> tuple[float, int]:
    """(median seconds to answer the questions, tokens generated): a memory that changes the
    answers changes their length too, so the time ratio is read beside the tokens/s ratio."""
    times, tokens = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        answers = engine.generate(questions)
        times.append(time.perf_counter() - start)
        tokens = sum(len(answer.token_ids) for answer in answers)
    return statistics.median(times), tokens


def run_memory_method(name: str, n_cases: int) -> dict:
    from pytest_wild.cases.loaders import load_file
    from pytest_wild.editors import get_editor
    from pytest_wild.editors.api import EditorCache, EditorState, edit
    from pytest_wild.editors.hparams import build_hparams
    from pytest_wild.generation.engine import Engine
    from pytest_wild.model.load import TINYWORLD_DIR, load_model

    loaded = load_model(None, "cpu")
    model, tok = loaded.model, loaded.tokenizer
    suite = load_file(TINYWORLD_DIR / "suite.jsonl")
    extra = load_file(TINYWORLD_DIR / "sequential.jsonl")
    editor = get_editor(name)
    hp = build_hparams(editor.hparams_type, editor.defaults(model.config, loaded.profile), [])
    cache = EditorCache(model)

    times = []
    for case in suite[:n_cases]:
        torch.manual_seed(0)
        start = time.perf_counter()
        handle = edit(editor, model, tok, [case], hp, cache=cache)
        times.append(time.perf_counter() - start)
        handle.restore()

    engine, questions = Engine(model, tok), questions_of(suite)
    engine_seconds(engine, questions, runs=1)  # warm up
    timings = {}
    for size in MEMORY_SIZES:
        state = EditorState()
        fill = fill_grace if name == "grace" else fill_wise
        fill(model, tok, editor, hp, extra[:size], state, cache)
        timings[str(size)] = interleaved(engine, questions, model, hp, state, name)
        state.clear()
    return {"method": name, "cases": n_cases, "edit_s": statistics.mean(times), "edit_median_s": statistics.median(times),
            "peer_s": PEER_S_PER_EDIT[name], "questions": len(questions), "timings": timings}


def interleaved(engine, questions: list[str], model, hp, state, name: str, pairs: int = 5) -> dict:
    """The engine with the memory and without it, alternately (the memory taken off and put
    back between runs), so that drift in the machine's speed falls on both sides alike."""
    from pytest_wild.editors.memory import grace, wise

    memory = state.parts()[name]
    loaded, bare = [], []
    for _ in range(pairs):
        loaded.append(engine_seconds(engine, questions, runs=1))
        memory.detach()
        bare.append(engine_seconds(engine, questions, runs=1))
        (grace if name == "grace" else wise).attach(model, hp, state)
    return {"loaded_s": statistics.median(t for t, _ in loaded), "loaded_tokens": loaded[0][1],
            "unedited_s": statistics.median(t for t, _ in bare), "unedited_tokens": bare[0][1]}


@torch.no_grad()
def fill_grace(model, tok, editor, hp, cases, state, cache) -> None:
    """A codebook of len(cases) keys: each case's key at the prompt's last token, its warm value."""
    from pytest_wild.editors.memory.grace import attach, layer_at

    module, book = attach(model, hp, state)
    keys, values = [], []
    for case in cases:
        ids = torch.tensor([tok(case.prompt)["input_ids"]])
        key, value = layer_at(model, module, ids, ids.shape[1] - 1)
        keys.append(key)
        values.append(value)
    n = len(keys)
    book.put(torch.stack(keys), torch.stack(values), torch.full((n,), hp.eps), torch.arange(n, dtype=torch.float64))


def fill_wise(model, tok, editor, hp, cases, state, cache) -> None:
    """len(cases) WISE edits, one optimisation step each, kept in the sequence's side memory."""
    from dataclasses import replace

    from pytest_wild.editors.api import edit

    quick = replace(hp, n_iter=1)
    for case in cases:
        edit(editor, model, tok, [case], quick, cache=cache, state=state)


def print_memory_table(rows: list[dict]) -> None:
    sizes = " | ".join(f"{'x' + str(size) + ' time, tok/s':>19}" for size in MEMORY_SIZES)
    header = f"| {'method':<6} | {'s/edit':>6} | {'EasyEdit s/edit':>15} | {'faster':>6} | {sizes} |"
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")
    for row in rows:
        cells = []
        for size in map(str, MEMORY_SIZES):
            t = row["timings"][size]
            per_token = (t["loaded_s"] / t["loaded_tokens"]) / (t["unedited_s"] / t["unedited_tokens"])
            cells.append(f"{t['loaded_s'] / t['unedited_s']:>9.2f}x, {per_token:>6.2f}x")
        print(f"| {row['method']:<6} | {row['edit_s']:>6.3f} | {row['peer_s']:>15.2f} | "
              f"{row['peer_s'] / row['edit_s']:>5.1f}x | " + " | ".join(cells) + " |")
    first = rows[0]
    print(f"s/edit: mean apply() of {first['cases']} single edits at the tinyworld defaults; EasyEdit: the peer "
          f"figure quoted in issue 16 (not measured here); xN: the engine with a memory of N edits against the "
          f"unedited model on the suite's {first['questions']} questions, as the ratio of wall times and of time "
          f"per generated token (medians of 5 runs each, the two sides alternating, same process).")
