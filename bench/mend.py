"""MEND on the bundled model: training throughput, and seconds per edit against the other editors.

    python bench/mend.py [--steps N] [--cases K]

1. Training: N steps of `pytest-wild train-mend` with the shipped network's settings (read
   from its mend.json), from scratch, in this process: steps per second. Beside it, the
   shipped training's own record (steps, seconds, the step its best validation came at), so
   the time to the shipped quality reads as that step over the measured rate.
2. Editing: single edits of the first K suite cases, each restored, with MEND (the shipped
   network) and with FT-M, ROME, GRACE and WISE at their tinyworld defaults, in the same
   process, one after another: mean seconds per edit, and each editor's ratio to MEND's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

OTHERS = ("ft-m", "rome", "grace", "wise")


def training_rate(loaded, steps: int) -> tuple[float, dict]:
    from pytest_wild.cases.loaders import load_file
    from pytest_wild.editors.meta.mend import SHIPPED
    from pytest_wild.editors.meta.settings import TrainSettings
    from pytest_wild.editors.meta.trainer import train
    from pytest_wild.editors.meta.training_data import split

    shipped = json.loads((SHIPPED["tinyworld"] / "mend.json").read_text())["training"]
    settings = dict(shipped["settings"], val_cases=8)
    settings["steps"] = settings["val_every"] = steps - steps % settings["accumulate"]
    training, validation = split(load_file(SHIPPED["tinyworld"].parent / "mend.jsonl"), 8, settings["seed"])
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        train(loaded.model, loaded.tokenizer, training, validation, TrainSettings(**settings), Path(out),
              record={}, bar=False)
        seconds = time.perf_counter() - start
    return settings["steps"] / seconds, shipped


def edit_seconds(loaded, name: str, cases) -> float:
    from pytest_wild.editors import get_editor
    from pytest_wild.editors.api import EditorCache, edit
    from pytest_wild.editors.hparams import build_hparams

    editor = get_editor(name)
    hp = build_hparams(editor.hparams_type, editor.defaults(loaded.model.config, loaded.profile), [])
    cache = EditorCache(loaded.model)
    if editor.prepare is not None:
        editor.prepare(loaded.model, loaded.tokenizer, hp, cache)
    edit(editor, loaded.model, loaded.tokenizer, [cases[0]], hp, cache=cache).restore()  # one-off work (templates)
    times = []
    for case in cases:
        torch.manual_seed(0)
        start = time.perf_counter()
        handle = edit(editor, loaded.model, loaded.tokenizer, [case], hp, cache=cache)
        times.append(time.perf_counter() - start)
        handle.restore()
    return statistics.mean(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps timed (default: 100)")
    parser.add_argument("--cases", type=int, default=30, help="single edits timed per editor (default: 30)")
    args = parser.parse_args()

    from pytest_wild.cases.loaders import load_file
    from pytest_wild.model.load import TINYWORLD_DIR, choose_cpu_threads, load_model
    from pytest_wild.run.runtime import versions

    loaded = load_model(None, "cpu")
    threads = choose_cpu_threads(loaded.model, "cpu")
    rate, shipped = training_rate(loaded, args.steps)
    best = shipped["best"]["step"]
    print(f"torch {torch.__version__}, transformers {versions()['transformers']}, {threads or torch.get_num_threads()} threads")
    print(f"\ntraining: {rate:.2f} steps/s measured over {args.steps} steps; the shipped training: "
          f"{shipped['steps']} steps in {shipped['seconds']} s ({shipped['steps_per_second']} steps/s), best "
          f"validation at step {best}, so {best / rate:.0f} s to the shipped quality at the measured rate")
    cases = load_file(TINYWORLD_DIR / "suite.jsonl")[: args.cases]
    rows = [("mend", edit_seconds(loaded, "mend", cases))]
    rows += [(name, edit_seconds(loaded, name, cases)) for name in OTHERS]
    print(f"\n| editor | s per edit ({args.cases} single edits) | ratio to MEND |\n|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.4f} | {seconds / rows[0][1]:.1f}x |")


if __name__ == "__main__":
    main()
