"""The LLM judge's client against a loopback chat-completions server with a fixed latency.

    python bench/judge.py [--answers N] [--latency S]

N answers (default 1,000) graded with 50 ms of latency per request: one at a time, then at the
default concurrency, in the same run, as a ratio (goal: at least 10x); then the same answers
again through the cache filled by the concurrent run (zero requests).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/judge_server.py

from tests.judge_server import JudgeServer  # noqa: E402

from pytest_wild.judge.cache import VerdictCache  # noqa: E402
from pytest_wild.judge.client import DEFAULT_CONCURRENCY, JudgeClient  # noqa: E402
from pytest_wild.judge.grader import Answer  # noqa: E402


def timed(server: JudgeServer, answers: list[Answer], concurrency: int, cache=None) -> tuple[float, int]:
    client = JudgeClient(server.url, "bench-judge", "sk-bench", concurrency=concurrency, cache=cache)
    before = server.requests
    start = time.perf_counter()
    verdicts = client.judge(answers)
    seconds = time.perf_counter() - start
    client.close()
    assert all(v.verdict == "CORRECT" for v in verdicts)
    return seconds, server.requests - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    answers = [Answer(f"Q{i}?", f"A{i}", f"right {i}") for i in range(args.answers)]
    with JudgeServer(latency=args.latency) as server, tempfile.TemporaryDirectory() as directory:
        serial, _ = timed(server, answers, 1)
        cache = VerdictCache(Path(directory) / "judge.sqlite")
        concurrent, _ = timed(server, answers, DEFAULT_CONCURRENCY, cache)
        cached, requests = timed(server, answers, DEFAULT_CONCURRENCY, cache)
        cache.close()
    print(f"{args.answers} answers, {args.latency * 1000:.0f} ms per request, loopback server")
    print("| calls | wall s | ratio to one at a time |\n|---|---:|---:|")
    print(f"| one at a time | {serial:.2f} | 1.0x |")
    print(f"| {DEFAULT_CONCURRENCY} at a time (default) | {concurrent:.2f} | {serial / concurrent:.1f}x |")
    print(f"| rerun from the cache ({requests} requests) | {cached:.3f} | {serial / cached:.0f}x |")


if __name__ == "__main__":
    main()
