"""Engine benchmark: the batched, cached engine against the published one-question-at-a-time,
uncached loop, on the same model and questions, in the same run.

    python bench/engine.py [--model PATH] [--questions N] [--reference N] [--batch-size B] [--repeat R]

Both sides are warmed up once, then timed R times; the table shows the median. Prints
throughput, the ratio and the agreement of the generations (identical token ids).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pytest_wild.cases.loaders import load_file
from pytest_wild.generation.engine import Engine
from pytest_wild.generation.reference import reference_generate
from pytest_wild.model.load import TINYWORLD_DIR, load_model


def questions_from_suite(limit: int) -> list[str]:
    cases = load_file(TINYWORLD_DIR / "suite.jsonl")
    found = []
    for case in cases:
        found += [case.prompt, case.rephrase] + [loc.question for loc in case.locality]
    return list(dict.fromkeys(q for q in found if q))[:limit]


def median_time(work, repeat: int):
    """(median seconds over `repeat` runs, the last run's result)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model directory or hub id (default: bundled tinyworld)")
    parser.add_argument("--questions", type=int, default=1000, help="questions for the engine")
    parser.add_argument("--reference", type=int, default=200, help="questions for the reference loop (a prefix)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions of each side (median shown)")
    args = parser.parse_args()
    loaded = load_model(args.model, args.device, args.dtype)
    questions = questions_from_suite(args.questions)
    engine = Engine(loaded.model, loaded.tokenizer, batch_size=args.batch_size)
    subset = questions[: args.reference]

    def run_engine():
        return engine.generate(questions)

    def run_reference():
        return [reference_generate(loaded.model, loaded.tokenizer, q) for q in subset]

    run_engine()
    reference_generate(loaded.model, loaded.tokenizer, subset[0])
    engine_s, batched = median_time(run_engine, args.repeat)
    reference_s, reference = median_time(run_reference, args.repeat)

    agree = sum(a.token_ids == b.token_ids and a.text == b.text for a, b in zip(batched, reference))
    engine_rate, reference_rate = len(questions) / engine_s, len(subset) / reference_s
    print(f"model: {loaded.spec}  device: {loaded.device}  dtype: {loaded.dtype}  "
          f"threads: {torch.get_num_threads()}  batch size: {args.batch_size}  median of {args.repeat} runs")
    print(f"| {'method':<38} | {'questions':>9} | {'seconds':>8} | {'questions/s':>11} | {'ratio':>7} |")
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 10}|{'-' * 13}|{'-' * 9}|")
    print(f"| {'reference (one at a time, no cache)':<38} | {len(subset):>9} | {reference_s:>8.2f} | {reference_rate:>11.1f} | {1.0:>6.1f}x |")
    print(f"| {'pytest-wild engine (batched, KV cache)':<38} | {len(questions):>9} | {engine_s:>8.2f} | {engine_rate:>11.1f} | {engine_rate / reference_rate:>6.1f}x |")
    print(f"identical generations: {agree}/{len(subset)} ({100 * agree / len(subset):.1f}%)")


if __name__ == "__main__":
    main()
