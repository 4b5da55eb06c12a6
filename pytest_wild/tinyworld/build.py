"""Build the bundled "tinyworld" model: tokenizer, tiny GPT-2, edit suite and corpus.

The output is an ordinary Hugging Face directory (safetensors, tokenizer.json, configs), so the
rest of pytest-wild loads it exactly like a hub model, offline and in seconds. Everything is
derived from one seed and trained deterministically on CPU, so a rebuild is byte-identical.

Run ``python -m pytest_wild.tinyworld.build OUT_DIR`` to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from pytest_wild.generation.engine import Engine
from pytest_wild.storage import write_text_atomic
from pytest_wild.scores.answers import exact_match as answer_matches
from pytest_wild.tinyworld.world import (DEFAULT_SEED, Fact, World, corpus_lines, generate_world, mend_records,
                                         perplexity_lines, sequential_records, suite_records)

EOT = "<|endoftext|>"
VOCAB_SIZE = 2000
MODEL_SHAPE = {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 128}
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
WARMUP_FRACTION = 0.05
DEFAULT_STEPS = 3000
FILE_MODE = 0o644
THREADS = 2
EVAL_TRAINED_QUESTIONS = 1000
SHIPPED_HASHED = ("model.safetensors", "tokenizer.json", "suite.jsonl", "corpus.txt")

Log = Callable[[str], object]


def world_files(world: World) -> dict[str, str]:
    """The files that depend on the world only, not on training, by name: the suite, the
    sequential suite, the statistics' corpus, the sequential runs' perplexity text and the
    edits MEND is trained on."""
    def jsonl(records: list[dict]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)

    return {"suite.jsonl": jsonl(suite_records(world)),
            "sequential.jsonl": jsonl(sequential_records(world)),
            "corpus.txt": "".join(line + "\n" for line in corpus_lines(world)),
            "perplexity.txt": "".join(line + "\n" for line in perplexity_lines(world)),
            "mend.jsonl": jsonl(mend_records(world))}


def write_world_files(world: World, out_dir: Path) -> list[str]:
    """Write them (atomically); their names."""
    files = world_files(world)
    for name, text in files.items():
        write_text_atomic(out_dir / name, text)
    return list(files)


def train_tokenizer(world: World) -> PreTrainedTokenizerFast:
    """A small byte-level BPE fitted to the training text, with GPT-2's conventions."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(world.training_lines(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
        unk_token=EOT,
        model_max_length=MODEL_SHAPE["n_positions"],
        padding_side="left",
    )


def make_model(tokenizer: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    """A tiny GPT-2 without dropout (it only has to memorise), initialised from torch's RNG.
    Its activation is the exact (erf) GELU, one vectorised kernel on CPU: GPT-2's tanh
    approximation took a quarter of the engine's time as `gelu_new` (five elementwise ops)
    and still 4x the exact one's time per element as `gelu_pytorch_tanh`."""
    eot = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        activation_function="gelu",
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        **MODEL_SHAPE,
    )
    model = GPT2LMHeadModel(config)
    model.generation_config = GenerationConfig(bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)
    return model


def _batches(
    encoded: Sequence[list[int]], pad_id: int, rng: random.Random
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Endless right-padded batches of whole lines, reshuffled by `rng` every epoch."""
    order = list(range(len(encoded)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE):
            rows = [encoded[i] for i in order[start : start + BATCH_SIZE]]
            width = max(map(len, rows))
            ids = torch.full((len(rows), width), pad_id)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, row in enumerate(rows):
                ids[r, : len(row)] = torch.tensor(row)
                mask[r, : len(row)] = 1
            yield ids, mask, ids.masked_fill(mask == 0, -100)


def _schedule(steps: int) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to zero, as a multiplier of the base learning rate."""
    warmup = max(1, int(steps * WARMUP_FRACTION))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return factor


def train(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, world: World, steps: int, log: Log) -> float:
    """Train on every training line (plus EOS) with AdamW; return the mean loss of the last steps."""
    eot = tokenizer.eos_token_id
    encoded = [tokenizer(line + "\n")["input_ids"] + [eot] for line in world.training_lines()]
    batches = _batches(encoded, eot, random.Random(f"{world.seed}:order"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(steps))
    model.train()
    recent: deque[float] = deque(maxlen=50)
    started = time.perf_counter()
    for step in range(steps):
        ids, mask, labels = next(batches)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        recent.append(loss.item())
        if (step + 1) % 250 == 0 or step + 1 == steps:
            elapsed = time.perf_counter() - started
            log(f"step {step + 1}/{steps} loss {sum(recent) / len(recent):.4f} ({elapsed:.0f}s)")
    model.eval()
    return sum(recent) / len(recent)


def exact_match(
    model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, questions: Sequence[tuple[str, str]]
) -> float:
    """Fraction of (prompt, answer) pairs answered right under WILD decoding, measured with the
    plugin's own engine and scores so the quality bar means what the suite means."""
    answers = Engine(model, tokenizer, batch_size=128).generate([q for q, _ in questions])
    hits = sum(answer_matches(g.text, a) for g, (_, a) in zip(answers, questions))
    return hits / max(1, len(questions))


def _all_questions(world: World, facts: Sequence[Fact]) -> list[tuple[str, str]]:
    """Every template of every fact in `facts` as (prompt, answer)."""
    questions = []
    for fact in facts:
        relation = world.relation(fact.relation)
        questions.extend((relation.question(fact.subject, t), fact.answer) for t in range(len(relation.templates)))
    return questions


def measure(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, world: World) -> dict[str, float | int]:
    """Exact match on a fixed sample of trained questions, all held-out questions and the suite."""
    trained = _all_questions(world, world.trained_facts)
    sample = random.Random(f"{world.seed}:eval").sample(trained, min(EVAL_TRAINED_QUESTIONS, len(trained)))
    heldout = _all_questions(world, world.heldout)
    records = suite_records(world)
    counterfact = [r for r in records if r["ground_truth"] is not None]
    return {
        "trained_questions": len(sample),
        "em_trained": exact_match(model, tokenizer, sample),
        "heldout_questions": len(heldout),
        "em_heldout": exact_match(model, tokenizer, heldout),
        "em_suite_counterfact_prompt_truth": exact_match(
            model, tokenizer, [(r["prompt"], r["ground_truth"]) for r in counterfact]
        ),
        "em_suite_locality": exact_match(
            model, tokenizer, [(item["loc"], item["loc_ans"]) for r in records for item in r["locality"]]
        ),
    }


def _make_tokenizer_config_portable(path: Path) -> None:
    """Name the generic fast tokenizer class, which transformers 4.x and 5.x both resolve.

    transformers 5 records its internal "TokenizersBackend" class, unknown to 4.x releases that
    pytest-wild still supports; both map "PreTrainedTokenizerFast" to a tokenizer.json loader.
    """
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_model(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    """save_pretrained into a temp dir inside `out_dir`, then move each file into place atomically."""
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".staging-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _make_tokenizer_config_portable(staging / "tokenizer_config.json")
        for path in sorted(staging.iterdir()):
            os.chmod(path, FILE_MODE)
            os.replace(path, out_dir / path.name)
    finally:
        for path in staging.iterdir():
            path.unlink()
        staging.rmdir()


@contextmanager
def _deterministic_torch(seed: int) -> Iterator[None]:
    """Seeded, deterministic, fixed-thread torch for the build; the caller's settings come back after."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(THREADS)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic)
            torch.set_num_threads(threads)


def _sha256(path: Path) -> str:
    """Hex digest of a file, recorded so a rebuild can be compared byte for byte."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(out_dir: Path, seed: int = DEFAULT_SEED, steps: int | None = None, log: Log = print) -> dict:
    """Generate the world, train tokenizer and model, and write the model directory; return build.json."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = DEFAULT_STEPS if steps is None else steps
    world = generate_world(seed)
    with _deterministic_torch(seed):
        tokenizer = train_tokenizer(world)
        model = make_model(tokenizer)
        log(f"tinyworld: {len(world.subjects)} subjects, {len(world.training_lines())} training lines")
        train_started = time.perf_counter()
        final_loss = train(model, tokenizer, world, steps, log)
        train_seconds = time.perf_counter() - train_started
        metrics = measure(model, tokenizer, world)
    log(f"exact match: trained {metrics['em_trained']:.3f}, held-out {metrics['em_heldout']:.3f}")
    save_model(model, tokenizer, out_dir)
    write_world_files(world, out_dir)
    info = {
        "seed": seed,
        "steps": steps,
        "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE,
        "model": MODEL_SHAPE,
        "vocab_size": len(tokenizer),
        "params": sum(p.numel() for p in model.parameters()),
        "subjects": len(world.subjects),
        "relations": len(world.relations),
        "trained_facts": len(world.trained_facts),
        "heldout_facts": len(world.heldout),
        "training_lines": len(world.training_lines()),
        "final_loss": round(final_loss, 6),
        **{k: round(v, 6) if isinstance(v, float) else v for k, v in metrics.items()},
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sha256": {name: _sha256(out_dir / name) for name in SHIPPED_HASHED},
    }
    write_text_atomic(out_dir / "build.json", json.dumps(info, indent=2) + "\n")
    return info


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent.parent / "data" / "tinyworld")
