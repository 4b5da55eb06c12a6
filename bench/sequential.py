"""Sequential-editing benchmark: long sequences of kept edits on the bundled tinyworld model.

    python bench/sequential.py [--edits 1000] [--methods ft-m,memit,alphaedit,ultraedit] [--published-edits 50]

For each method, in its own process (so peak memory is its own): the first N cases of the
bundled `tinyworld-sequential` suite edited one after another into one model, scored at the
default checkpoints (1, 10, 100, 1000 and the last edit) exactly as `--wild-sequential N` does
(the same `run_sequence`). Printed: seconds per edit (the edit alone, and with its immediate
scoring), seconds per checkpoint, and at each checkpoint the resident memory, its peak so far
and the bytes of the editor's own state (AlphaEdit's preserved keys), which is all that may
grow. Then, for MEMIT, AlphaEdit and UltraEdit, the same first K cases edited in sequence by
pytest-wild and by the published algorithm of bench/published.py (AlphaEdit's C_prev and
UltraEdit's running statistics carried from edit to edit as their drivers do), timed on both
sides in one run, with the ratio and the largest relative gap between the two final weight
updates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import ultraedit
from editors import peak_mib, published_reference, rss_mib

METHODS = ("ft-m", "memit", "alphaedit")
CHECKPOINTS = (1, 10, 100, 1000)


class Recorder:
    """The sequence's progress lines, turned into a row per checkpoint."""

    def __init__(self, runtime) -> None:
        self.runtime, self.rows, self.started = runtime, [], time.perf_counter()
        self.checkpoint_started = self.started
        evaluator = runtime.evaluator
        rows_now = evaluator.rows_now

        def timed(cases):  # a checkpoint scores every edit so far: more cases than one update
            if len(cases) > runtime.options.batch_size:
                self.checkpoint_started = time.perf_counter()
            return rows_now(cases)

        evaluator.rows_now = timed

    def note(self, text: str) -> None:
        from pytest_wild.editors.api import tensor_bytes

        if " edits: " not in text:
            return
        now = time.perf_counter()
        self.rows.append({"edits": int(text.split(" of ")[0]), "checkpoint_s": now - self.checkpoint_started,
                          "elapsed_s": now - self.started, "rss_mib": rss_mib(), "peak_mib": peak_mib(),
                          "state_mib": tensor_bytes(self.runtime.editor_state.state_dict()) / 2**20})

    def live(self, text: str) -> None:
        pass


def run_method(name: str, edits: int, published_edits: int) -> dict:
    from pytest_wild.cases.suite import BUNDLED_SUITES, load_suite
    from pytest_wild.run.options import Options
    from pytest_wild.run.runtime import Runtime
    from pytest_wild.sequence.sequential import run_sequence

    suite = load_suite(BUNDLED_SUITES / "tinyworld-sequential.yaml", limit=None)
    options = Options(editor=name, model=None, suite=None, limit=None, modes=("wild",), context=None, metric="em",
                      hparams_file=None, device="cpu", dtype="float32", stop_rule="published", sequential=edits,
                      checkpoints=CHECKPOINTS)
    runtime = Runtime(options, suite)
    cases = suite.cases[:edits]
    runtime.start(cases)  # model, statistics
    loaded = runtime.loaded
    recorder = Recorder(runtime)
    rows = run_sequence(cases, runtime.evaluator, runtime.apply_edit, runtime.editor_state, 1, CHECKPOINTS,
                        suite.perplexity_text, recorder)
    total = time.perf_counter() - recorder.started
    edit_s = sum(row.timing["edit_seconds"] for row in rows) / len(rows)
    with_scoring_s = sum(row.timing["edit_seconds"] + row.timing["evaluate_seconds"] for row in rows) / len(rows)
    result = {"method": name, "edits": len(rows), "total_s": total, "edit_s": edit_s, "with_scoring_s": with_scoring_s,
              "checkpoints": recorder.rows}
    if name in ("memit", "alphaedit", "ultraedit") and published_edits:
        result |= compare_sequences(name, loaded, cases[:published_edits], runtime.hparams, runtime.editor_cache)
    return result


def compare_sequences(name: str, loaded, cases, hp, cache) -> dict:
    """pytest-wild and the published algorithm, each editing `cases` in sequence from the
    unedited model (the other side's edits undone in between)."""
    import published

    from pytest_wild.editors import get_editor
    from pytest_wild.editors.api import EditorState, edit

    model, tok = loaded.model, loaded.tokenizer
    modules, reference = (ultraedit.published_reference(loaded, hp) if name == "ultraedit"
                          else published_reference(name, loaded, hp, cache))
    saved = published.save_weights(model, modules)
    editor, state = get_editor(name), EditorState()
    edit(editor, model, tok, cases[:1], hp, cache=cache, state=EditorState()).restore()  # first shapes
    start = time.perf_counter()
    for case in cases:
        edit(editor, model, tok, [case], hp, cache=cache, state=state)
    ours_s = (time.perf_counter() - start) / len(cases)
    ours = {m: published.weight_update(model, m, saved[m]) for m in modules}
    published.put_back(model, saved)
    cache_c: dict = {}
    start = time.perf_counter()
    for case in cases:
        reference(case, cache_c)
    published_s = (time.perf_counter() - start) / len(cases)
    theirs = {m: published.weight_update(model, m, saved[m]) for m in modules}
    published.put_back(model, saved)
    gap = max(float((ours[m] - theirs[m]).norm() / theirs[m].norm().clamp_min(1e-30)) for m in modules)
    return {"published_edits": len(cases), "sequence_edit_s": ours_s, "published_s": published_s, "update_gap": gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=1000)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--published-edits", type=int, default=50,
                        help="cases of the sequence both sides edit for the published comparison (0: none)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_method(args.child, args.edits, args.published_edits)))
        return
    import importlib.metadata as metadata

    print(f"torch {torch.__version__}, transformers {metadata.version('transformers')}, "
          f"{len(os.sched_getaffinity(0))} CPU cores; {args.edits} sequential edits on the bundled model")
    results = []
    for name in args.methods.split(","):
        command = [sys.executable, __file__, "--child", name, "--edits", str(args.edits),
                   "--published-edits", str(args.published_edits)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}")
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print("\n| method | edits | total s | s/edit | s/edit with scoring | published s/edit | ratio | ΔW gap |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        published_s = r.get("published_s")
        compared = ([f"{published_s:.3f}", f"{published_s / r['sequence_edit_s']:.1f}x", f"{r['update_gap']:.1e}"]
                    if published_s else ["-", "-", "-"])
        print(f"| {r['method']} | {r['edits']} | {r['total_s']:.0f} | {r['edit_s']:.3f} | {r['with_scoring_s']:.3f} | "
              + " | ".join(compared) + " |")
    print("\n| method | after edits | checkpoint s | elapsed s | RSS MiB | peak MiB | editor state MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for c in r["checkpoints"]:
            print(f"| {r['method']} | {c['edits']} | {c['checkpoint_s']:.1f} | {c['elapsed_s']:.0f} | {c['rss_mib']:.0f} | "
                  f"{c['peak_mib']:.0f} | {c['state_mib']:.2f} |")


if __name__ == "__main__":
    main()
