"""UltraEdit on the bundled model against the plain form of EasyEdit's code (bench/published.py).
Run through `python bench/editors.py --methods ultraedit`.

Single edits of the first N suite cases, each restored: seconds per `apply`, WILD reliability,
generalisation and locality (identical tokens), peak memory. On the first K of them, the same
edits by the published form, timed, and compared by their weight updates. Then a sequence of
the K edits, never restored, on both sides, each side carrying its own running statistics:
the largest gap between the updates of any edit of the sequence.
"""

from __future__ import annotations

import time

import torch


def passes(model, tok, cases, hp) -> list:
    """The editor's input, cut into its passes, as the published form takes it."""
    from pytest_wild.editors.meta.training import target_batch
    from pytest_wild.editors.meta.ultraedit import read_tokens

    found = []
    for start in range(0, len(cases), hp.batch_size_once):
        chunk = cases[start:start + hp.batch_size_once]
        inputs, labels = target_batch(model, tok, [(c.prompt, c.target) for c in chunk])
        found.append((inputs, labels, read_tokens(inputs["attention_mask"], labels, hp.token)))
    return found


def published_reference(loaded, hp):
    """(modules, reference): `reference(case, normalizers=None)` is one edit by the published
    form, its statistics carried in `normalizers` (a dict the caller keeps across a sequence),
    else fresh; the signature of `editors.published_reference`'s."""
    import published

    from pytest_wild.editors.meta.ultraedit import module_names

    model, tok = loaded.model, loaded.tokenizer
    modules = module_names(hp)

    def reference(case, normalizers=None):
        return published.ultraedit_edit(model, passes(model, tok, [case], hp), modules, hp.lr,
                                        {} if normalizers is None else normalizers)

    return modules, reference


def run_ultraedit(n_cases: int, naive_cases: int, peak_mib, reset_peak, rss_mib) -> dict:
    import warnings

    import published

    from pytest_wild.cases.loaders import load_file
    from pytest_wild.editors import get_editor
    from pytest_wild.editors.api import EditorCache, EditorState, edit
    from pytest_wild.editors.hparams import build_hparams
    from pytest_wild.generation.engine import Engine
    from pytest_wild.model.load import TINYWORLD_DIR, load_model
    from pytest_wild.scores.answers import exact_match

    warnings.filterwarnings("ignore", "Full backward hook is firing")  # the published hooks, as published
    loaded = load_model(None, "cpu")
    model, tok = loaded.model, loaded.tokenizer
    cases = load_file(TINYWORLD_DIR / "suite.jsonl")[:n_cases]
    editor = get_editor("ultraedit")
    hp = build_hparams(editor.hparams_type, editor.defaults(model.config, loaded.profile), [])
    modules, reference = published_reference(loaded, hp)
    baseline = rss_mib()
    reset_peak()
    cache = EditorCache(model)
    engine = Engine(model, tok)
    rel = gen = 0.0
    loc = n_loc = 0
    for case in cases:
        questions = [case.prompt, case.rephrase] + [item.question for item in case.locality]
        before = engine.generate(questions)
        handle = edit(editor, model, tok, [case], hp, cache=cache)
        after = engine.generate(questions)
        handle.restore()
        rel += exact_match(after[0].text, case.target)
        gen += exact_match(after[1].text, case.target)
        loc += sum(a.token_ids == b.token_ids for a, b in zip(after[2:], before[2:]))
        n_loc += len(case.locality)
    peak = peak_mib()

    compared = cases[:naive_cases]
    ours_s = published_s = worst = 0.0
    for case in compared:
        saved = published.save_weights(model, modules)
        start = time.perf_counter()
        handle = edit(editor, model, tok, [case], hp, cache=cache)
        ours_s += time.perf_counter() - start
        ours = {m: published.weight_update(model, m, saved[m]) for m in modules}
        handle.restore()
        start = time.perf_counter()
        theirs = reference(case)
        published_s += time.perf_counter() - start
        published.put_back(model, saved)
        worst = max(worst, *(float((ours[m] - theirs[m].double()).norm() / theirs[m].norm()) for m in modules))

    saved = published.save_weights(model, modules)
    state, handles, ours_seq = EditorState(), [], []
    for case in compared:
        before = published.save_weights(model, modules)
        handles.append(edit(editor, model, tok, [case], hp, cache=cache, state=state))
        ours_seq.append({m: published.weight_update(model, m, before[m]) for m in modules})
    for handle in reversed(handles):
        handle.restore()
    normalizers, sequence_gap = {}, 0.0
    for case, ours in zip(compared, ours_seq):
        theirs = reference(case, normalizers)
        sequence_gap = max(sequence_gap, *(float((ours[m] - theirs[m].double()).norm() / theirs[m].norm())
                                          for m in modules))
    published.put_back(model, saved)
    n = max(len(compared), 1)
    return {"method": "ultraedit", "cases": len(cases), "modules": modules, "lr": hp.lr,
            "reliability": rel / len(cases), "generalization": gen / len(cases), "locality": loc / max(n_loc, 1),
            "edit_s": ours_s / n, "published_s": published_s / n, "update_gap": worst, "sequence_gap": sequence_gap,
            "compared": len(compared), "peak_mib": peak, "baseline_mib": baseline,
            "threads": torch.get_num_threads()}


def print_table(rows: list[dict]) -> None:
    header = (f"| {'method':<9} | {'modules':<28} | {'s/edit':>6} | {'published s/edit':>16} | {'speed-up':>8} | "
              f"{'ΔW gap':>7} | {'sequence gap':>12} | {'peak MiB':>8} | {'+MiB':>5} | {'rel':>5} | {'gen':>5} | "
              f"{'loc':>5} |")
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")
    for row in rows:
        names = ",".join(m.rsplit(".", 3)[-3] + "." + m.rsplit(".", 1)[-1] for m in row["modules"])
        print(f"| {row['method']:<9} | {names:<28} | {row['edit_s']:>6.3f} | {row['published_s']:>16.3f} | "
              f"{row['published_s'] / row['edit_s']:>7.1f}x | {row['update_gap']:>7.1e} | {row['sequence_gap']:>12.1e} | "
              f"{row['peak_mib']:>8.0f} | {row['peak_mib'] - row['baseline_mib']:>5.0f} | {row['reliability']:>5.2f} | "
              f"{row['generalization']:>5.2f} | {row['locality']:>5.2f} |")
    print(f"s/edit: apply() per single edit, restored after each, on the {rows[0]['compared']} compared cases; "
          "published: the same edit by bench/published.py (EasyEdit's hooks, in-place normaliser, padded "
          "chunks, dense solve); ΔW gap: largest ‖ΔW − ΔW_published‖/‖ΔW_published‖ over single edits; "
          "sequence gap: the same over a sequence of those edits, each side carrying its statistics; "
          f"rel/gen/loc: WILD over the first {rows[0]['cases']} cases.")
