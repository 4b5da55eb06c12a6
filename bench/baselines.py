"""LoRA and IKE against their plain published forms (bench/published.py) on the bundled model.
Run through `python bench/editors.py --methods lora,ike [--naive-cases K]`.

LoRA: K single edits of suite cases at the tinyworld defaults (AdaLoRA, as EasyEdit's GPT-2 file)
and again with `lora_type: lora`, by pytest-wild (peft, merged into the weights) and by
`published.lora_edit` (hooks, no peft), each seeded alike before the edit: seconds per edit on
both sides and the largest ‖ΔW − ΔW_published‖/‖ΔW_published‖.

IKE: K edits; the text pytest-wild asks after each (the handle's prefix + the question) beside
`published.ike_prompt` built from the same demonstrations (identical or not), and the
teacher-forced accuracy of the target on the prompt and rephrase by pytest-wild's engine beside
EasyEdit's `icl_lm_eval` (`published.icl_accuracy`): the largest difference. The retrieval is not
compared: the published one needs all-MiniLM-L6-v2 from the hub (ours is BM25, a variant).
"""

from __future__ import annotations

import time

import published
import torch

METHODS = ("lora", "lora-plain", "ike")


def run_baseline_method(name: str, naive_cases: int) -> dict:
    from pytest_wild.cases.loaders import load_file
    from pytest_wild.editors import get_editor
    from pytest_wild.editors.api import EditorCache, edit
    from pytest_wild.editors.hparams import build_hparams
    from pytest_wild.generation.engine import Engine
    from pytest_wild.model.load import TINYWORLD_DIR, load_model

    loaded = load_model(None, "cpu")
    model, tok = loaded.model, loaded.tokenizer
    cases = load_file(TINYWORLD_DIR / "suite.jsonl")[:naive_cases]
    editor = get_editor(name.removesuffix("-plain"))
    overrides = {"lora_type": "lora"} if name == "lora-plain" else {}
    hp = build_hparams(editor.hparams_type, editor.defaults(model.config, loaded.profile), [("bench", overrides)])
    cache, row = EditorCache(model), {"method": name, "cases": len(cases)}
    if name.startswith("lora"):
        ours_s, theirs_s, gaps = [], [], []
        for case in cases:
            torch.manual_seed(0)
            start = time.perf_counter()
            handle = edit(editor, model, tok, [case], hp, cache=cache)
            ours_s.append(time.perf_counter() - start)
            modules = [n.removesuffix(".weight") for n in handle.names if n.endswith(".weight")]
            ours = {m: published.weight_update(model, m, handle.original(f"{m}.weight")) for m in modules}
            handle.restore()
            torch.manual_seed(0)
            start = time.perf_counter()
            theirs = published.lora_edit(model, tok, [{"prompt": case.prompt, "target_new": case.target}], hp, modules)
            theirs_s.append(time.perf_counter() - start)
            gaps += [((ours[m] - theirs[m].double()).norm() / theirs[m].double().norm()).item() for m in modules]
        return row | {"edit_s": sum(ours_s) / len(ours_s), "published_s": sum(theirs_s) / len(theirs_s),
                      "gap": max(gaps)}
    engine, same, diffs, ours_s = Engine(model, tok, "published"), 0, [], []
    for case in cases:
        start = time.perf_counter()
        handle = edit(editor, model, tok, [case], hp, cache=cache)
        ours_s.append(time.perf_counter() - start)
        prefix, chosen = handle.prompt_prefix, handle.info[0]["demonstrations"]
        for question in (case.prompt, case.rephrase):
            same += prefix + question == published.ike_prompt(chosen, case.prompt, case.target, question)
            ours = engine.teacher_forced_accuracy([prefix + question], [case.target])[0]
            diffs.append(abs(ours - published.icl_accuracy(model, tok, prefix + question, case.target)))
        handle.restore()
    return row | {"edit_s": sum(ours_s) / len(ours_s), "identical_prompts": same, "prompts": 2 * len(cases),
                  "accuracy_gap": max(diffs)}


def print_baseline_table(rows: list[dict]) -> None:
    for row in rows:
        if row["method"].startswith("lora"):
            kind = "lora" if row["method"] == "lora-plain" else "adalora, the tinyworld default"
            print(f"lora ({row['cases']} edits, lora_type {kind}): {row['edit_s']:.3f} s/edit here, "
                  f"{row['published_s']:.3f} s/edit published form; largest ΔW gap {row['gap']:.1e}")
        else:
            print(f"ike ({row['cases']} edits): {row['edit_s'] * 1000:.1f} ms/edit (retrieval); prompts identical to "
                  f"EasyEdit's: {row['identical_prompts']}/{row['prompts']}; largest teacher-forced accuracy "
                  f"difference from icl_lm_eval: {row['accuracy_gap']:.3f}")
