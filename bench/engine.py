"""Engine benchmark: the batched, cached engine against the published one-question-at-a-time,
uncached loop, on the same model and questions, in the same run.

    python bench/engine.py [--model PATH] [--questions N] [--reference N] [--batch-size B] [--repeat R]
    python bench/engine.py --model smollm2-135m --suite qaedit --context chat --questions 200 --reference 40

Both sides are warmed up once, then timed R times; the table shows the median. Prints
throughput, the ratio and the agreement of the generations (identical token ids), and the share
of the machine's matrix-multiply peak each side reaches: the peak is the best of a few square
GEMMs in the run's dtype measured in the same run, and a side's rate counts 2 x (the weights
each token passes through: every linear layer and the output head) floating-point operations
per token it feeds the model, prompt and answer; attention's own products are left out, so the
share is a lower bound, and the uncached loop feeds every earlier token again at each step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from pytest_wild.cases.contexts import make_context
from pytest_wild.cases.loaders import load_file
from pytest_wild.cases.suite import find_suite, load_suite
from pytest_wild.generation.engine import Engine
from pytest_wild.generation.reference import reference_generate
from pytest_wild.model.load import TINYWORLD_DIR, load_model


def questions_from_suite(limit: int, suite: str | None = None) -> list[str]:
    """The first `limit` distinct questions (prompt, rephrase, locality) of tinyworld's suite, or
    of the named suite (`--suite qaedit`: the bundled QAEdit records)."""
    if suite is None:
        cases = load_file(TINYWORLD_DIR / "suite.jsonl")
    else:
        here = Path.cwd()
        cases = load_suite(find_suite(suite, here, here)).cases
    found = []
    for case in cases:
        found += [case.prompt, case.rephrase] + [loc.question for loc in case.locality]
    return list(dict.fromkeys(q for q in found if q))[:limit]


def gemm_peak(dtype: torch.dtype, device: torch.device, size: int = 2048, repeat: int = 5) -> float:
    """The best rate (FLOP/s) of `size`-square matrix multiplies on this machine, now."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.matmul(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def linear_weights(model) -> int:
    """Weights a token's forward pass multiplies by: every Linear (the tied output head counted
    once, as it is used once), not the embedding lookup."""
    return sum(module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Linear))


def fed_tokens(tokenizer, contexts: list[str], generations, cached: bool) -> int:
    """Tokens the model is fed: a cached engine feeds each prompt once and then one token a
    step; the uncached loop feeds the whole sequence again at every step."""
    total = 0
    for context, generation in zip(contexts, generations):
        prompt = len(tokenizer(context)["input_ids"])
        steps = max(len(generation.token_ids), 1)
        total += prompt + steps - 1 if cached else sum(prompt + step for step in range(steps))
    return total


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
    parser.add_argument("--suite", default=None, help="questions from this suite (default: tinyworld's bundled suite)")
    parser.add_argument("--context", default="question", help="how each question is put: question, chat, ... "
                        "(--wild-context's values)")
    args = parser.parse_args()
    loaded = load_model(args.model, args.device, args.dtype)
    questions = [make_context(question, args.context, loaded.tokenizer)
                 for question in questions_from_suite(args.questions, args.suite)]
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
    parameter = next(loaded.model.parameters())
    peak = gemm_peak(parameter.dtype, parameter.device)
    weights = linear_weights(loaded.model)
    share = {name: 2 * weights * fed_tokens(loaded.tokenizer, contexts, found, cached) / seconds / peak
             for name, contexts, found, cached, seconds in (("reference", subset, reference, False, reference_s),
                                                           ("engine", questions, batched, True, engine_s))}
    print(f"model: {loaded.spec}  device: {loaded.device}  dtype: {loaded.dtype}  context: {args.context}  "
          f"threads: {torch.get_num_threads()}  batch size: {args.batch_size}  median of {args.repeat} runs")
    print(f"GEMM peak (2048-square matmul, best of 5): {peak / 1e9:.1f} GFLOP/s; linear weights: {weights / 1e6:.1f} M")
    print(f"| {'method':<38} | {'questions':>9} | {'seconds':>8} | {'questions/s':>11} | {'ratio':>7} | {'of GEMM peak':>12} |")
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 10}|{'-' * 13}|{'-' * 9}|{'-' * 14}|")
    print(f"| {'reference (one at a time, no cache)':<38} | {len(subset):>9} | {reference_s:>8.2f} | {reference_rate:>11.3f} "
          f"| {1.0:>6.1f}x | {100 * share['reference']:>11.1f}% |")
    print(f"| {'pytest-wild engine (batched, KV cache)':<38} | {len(questions):>9} | {engine_s:>8.2f} | {engine_rate:>11.3f} "
          f"| {engine_rate / reference_rate:>6.1f}x | {100 * share['engine']:>11.1f}% |")
    print(f"identical generations: {agree}/{len(subset)} ({100 * agree / len(subset):.1f}%)")


if __name__ == "__main__":
    main()
