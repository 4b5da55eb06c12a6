"""Editor benchmark: ROME, R-ROME, MEMIT and AlphaEdit (and GRACE and WISE, see memory.py;
UltraEdit, see ultraedit.py) on the bundled tinyworld model.

    python bench/editors.py [--cases N] [--naive-cases K] [--methods rome,memit] [--threads T]
    python bench/editors.py --methods grace,wise [--cases N]
    python bench/editors.py --methods lora,lora-plain,ike [--naive-cases K]   (see baselines.py)
    python bench/editors.py --methods ultraedit [--cases N] [--naive-cases K]
    python bench/editors.py --random-model llama --hidden 2048 --layers 16 --device cuda
    python bench/editors.py --model smollm2-135m --suite qaedit --context chat --cases 10 --naive-cases 3

For each method, in its own process (so peak memory is its own): seconds per single edit
(`apply`, templates and statistics already loaded), peak resident memory, WILD reliability /
generalisation / locality over the first N suite cases. Then, on K cases, against the plain
implementation of the published algorithm in bench/published.py (whole-model passes at every
step, dense solves): whole single edits, timed on both sides and compared by their weight
updates; and the value search alone (the δ optimisation, the bulk of an edit) with the same
steps on both sides (early stopping off). Before that, the second-moment statistics are
computed cold for every layer the methods use, in one pass, into a fresh cache directory, and
loaded back warm.

With `--model` (a named model or a directory) and `--suite`, ROME, R-ROME, MEMIT and AlphaEdit
run the same way on that model and suite, each question put in `--context` (the chat template
for an instruct model); the statistics are then the user's cache's (on smollm2-135m, text
sampled from the model where wikitext cannot be reached, computed once), so only tinyworld's
cold pass is timed. GRACE, WISE, UltraEdit and the baselines run on tinyworld only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import types

import baselines
import memory
import published
import torch
import ultraedit

METHODS = ("rome", "r-rome", "memit", "alphaedit")


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak() -> bool:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_mib() -> float:
    """Peak resident memory since the last reset (VmHWM), else since the process started."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------ one method


def bench_model(spec: str | None, suite: str | None):
    """(loaded model, the suite's cases): tinyworld and its bundled suite by default."""
    from pytest_wild.cases.loaders import load_file
    from pytest_wild.model.load import TINYWORLD_DIR, load_model

    loaded = load_model(spec, "cpu")
    if suite is None:
        return loaded, load_file(TINYWORLD_DIR / "suite.jsonl")
    return loaded, suite_cases(suite)


def suite_cases(suite: str) -> list:
    """The cases of `--suite`, found as `--wild-suite` finds a suite (from the working directory)."""
    from pathlib import Path

    from pytest_wild.cases.suite import find_suite, load_suite

    here = Path.cwd()
    return load_suite(find_suite(suite, here, here, option="--suite")).cases


def check_inputs(args) -> None:
    """`--model` and `--suite` checked once, before any child starts: a bad value is one line
    naming the option, not a child's traceback per method."""
    from pytest_wild.cases.case import WildInputError
    from pytest_wild.model.load import check_model

    try:
        if args.model is not None:
            try:
                check_model(args.model)
            except WildInputError as exc:  # the library's message names pytest's option
                raise WildInputError(str(exc).replace("--wild-model:", "--model:", 1)) from None
        if args.suite is not None and not suite_cases(args.suite):
            raise WildInputError(f"--suite: {args.suite!r} holds no cases")
    except WildInputError as exc:
        raise SystemExit(f"error: {exc}") from None


def run_method(name: str, n_cases: int, naive_cases: int, spec: str | None = None, suite: str | None = None,
               context: str = "question") -> dict:
    from pytest_wild.cases.contexts import make_context
    from pytest_wild.editors import get_editor
    from pytest_wild.editors.api import EditorCache, edit
    from pytest_wild.editors.hparams import build_hparams
    from pytest_wild.editors.locate import values as value_search
    from pytest_wild.editors.locate.requests import pad_id, prepare
    from pytest_wild.editors.locate.templates import context_templates
    from pytest_wild.generation.engine import Engine
    from pytest_wild.model.architectures import architecture_of
    from pytest_wild.model.stats import published_corpus_or_fallback
    from pytest_wild.scores.answers import exact_match

    loaded, cases = bench_model(spec, suite)
    cases = cases[:n_cases]
    model, tok = loaded.model, loaded.tokenizer
    arch = architecture_of(model.config)
    editor = get_editor(name)
    hp, _ = published_corpus_or_fallback(build_hparams(editor.hparams_type, editor.defaults(model.config, loaded.profile), []))
    baseline = rss_mib()
    reset_peak()  # the peak below is the editing phase's, not the model loading's

    start = time.perf_counter()
    cache = EditorCache(model)
    edit(editor, model, tok, [cases[0]], hp, cache=cache).restore()  # templates, statistics, factorisations
    warmup = time.perf_counter() - start

    engine = Engine(model, tok)
    rel, gen, loc, n_loc = 0.0, 0.0, 0, 0
    for case in cases:
        questions = [make_context(question, context, tok)
                     for question in [case.prompt, case.rephrase] + [item.question for item in case.locality]]
        before = engine.generate(questions)
        handle = edit(editor, model, tok, [case], hp, cache=cache)
        after = engine.generate(questions)
        handle.restore()
        rel += exact_match(after[0].text, case.target)
        gen += exact_match(after[1].text, case.target)
        loc += sum(a.token_ids == b.token_ids for a, b in zip(after[2:], before[2:]))
        n_loc += len(case.locality)

    peak = peak_mib()
    published_s, ours_full_s, update_gap = compare_whole_edits(name, loaded, cases[:naive_cases], hp, cache)

    # the value search alone, ours against the published loop, same steps (no early stop)
    value_search.EARLY_STOP_LOSS = float("-inf")
    layer, at = (hp.layers[0], "mlp") if name in ("rome", "r-rome") else (max(hp.layers), "block")
    place = (arch.mlp if at == "mlp" else arch.block).format(layer)
    templates = context_templates(model, tok, hp.context_template_length_params, cache)
    pad = pad_id(tok)
    ours_s = naive_s = 0.0
    gaps = []
    for case in cases[:naive_cases]:
        request = prepare(tok, case, templates, [range(len(templates))], hp.fact_token)
        start = time.perf_counter()
        problem = value_search.ValueProblem(model, arch, [request], layer, at, hp.v_loss_layer, pad, cache=cache)
        values = value_search.optimise_values(problem, lr=hp.v_lr, steps=hp.v_num_grad_steps, kl_factor=hp.kl_factor,
                                              weight_decay=hp.v_weight_decay, clamp_norm_factor=hp.clamp_norm_factor)
        ours_s += time.perf_counter() - start
        start = time.perf_counter()
        _, naive = published.value_search(model, request, place, layer, hp, arch, pad, early_stop=float("-inf"))
        naive_s += time.perf_counter() - start
        gaps.append(float((values.delta[0].double() - naive).norm() / naive.norm().clamp_min(1e-12)))
    value_search.EARLY_STOP_LOSS = published.EARLY_STOP_LOSS
    return {"method": name, "cases": len(cases), "first_edit_s": warmup, "reliability": rel / len(cases), "generalization": gen / len(cases),
            "locality": loc / max(n_loc, 1), "peak_mib": peak, "baseline_mib": baseline,
            "value_search_s": ours_s / max(naive_cases, 1), "naive_s": naive_s / max(naive_cases, 1),
            "delta_gap": max(gaps) if gaps else 0.0, "steps": hp.v_num_grad_steps, "layers": hp.layers,
            "edit_s": ours_full_s, "published_s": published_s, "update_gap": update_gap}


def published_reference(name: str, loaded, hp, cache):
    """(modules, reference): the method's rewritten modules and `reference(case, cache_c=None)`,
    one edit by the published algorithm in bench/published.py, with what the published code
    computes once and caches (templates, C, C⁻¹, the projection) ready. AlphaEdit's C_prev is
    `cache_c` (a dict the caller keeps across a sequence), else zero."""
    from pytest_wild.editors.locate.requests import pad_id, prepare
    from pytest_wild.editors.locate.templates import context_templates
    from pytest_wild.model import stats
    from pytest_wild.model.architectures import architecture_of

    model, tok = loaded.model, loaded.tokenizer
    arch = architecture_of(model.config)
    pad = pad_id(tok)
    layers = sorted(hp.layers)
    modules = [hp.rewrite_module_tmp.format(layer) for layer in layers]
    found = stats.second_moments(model, tok, modules, hp.mom2_dataset, hp.mom2_n_samples, hp.mom2_dtype,
                                 memory=cache)
    covariances = {m: found[m].matrix.double() for m in modules}
    templates = context_templates(model, tok, hp.context_template_length_params, cache)
    rome_like = name in ("rome", "r-rome")
    groups = [range(len(templates))] if rome_like else [[0], list(range(1, len(templates)))]
    inverses = {m: torch.inverse(c) for m, c in covariances.items()} if rome_like and hp.mom2_adjustment else {}
    projections = ({m: published.nullspace_projection(c, hp.nullspace_threshold) for m, c in covariances.items()}
                   if name == "alphaedit" else {})

    def reference(case, cache_c=None):
        request = prepare(tok, case, templates, groups, hp.fact_token)
        if rome_like:
            return {modules[0]: published.rome_edit(model, request, hp, layers[0], arch, inverses.get(modules[0]),
                                                    pad, consistent_keys=name == "r-rome")}
        if name == "memit":
            return published.memit_edit(model, [request], hp, arch, covariances, pad)
        if cache_c is None:
            cache_c = {}
        for m, c in covariances.items():
            cache_c.setdefault(m, torch.zeros_like(c))
        return published.alphaedit_edit(model, [request], hp, arch, projections, cache_c, pad)

    return modules, reference


def compare_whole_edits(name: str, loaded, cases, hp, cache) -> tuple[float, float, float]:
    """(published s/edit, pytest-wild s/edit, largest ‖ΔW − ΔW_published‖/‖ΔW_published‖): whole
    single edits, early stopping on in both, each edit undone before the next. What the
    published code computes once and caches (templates, C, C⁻¹, the projection) is ready
    before the clock starts, on both sides."""
    from pytest_wild.editors import get_editor
    from pytest_wild.editors.api import edit

    model, tok = loaded.model, loaded.tokenizer
    editor = get_editor(name)
    modules, reference = published_reference(name, loaded, hp, cache)

    sync = torch.cuda.synchronize if next(model.parameters()).is_cuda else (lambda: None)
    ours_s = published_s = 0.0
    worst = 0.0
    for case in cases:
        saved = published.save_weights(model, modules)
        sync()
        start = time.perf_counter()
        handle = edit(editor, model, tok, [case], hp, cache=cache)
        sync()
        ours_s += time.perf_counter() - start
        ours = {m: published.weight_update(model, m, saved[m]) for m in modules}
        handle.restore()
        start = time.perf_counter()
        theirs = reference(case)
        sync()
        published_s += time.perf_counter() - start
        published.put_back(model, saved)
        for m in modules:
            worst = max(worst, float((ours[m] - theirs[m]).norm() / theirs[m].norm().clamp_min(1e-30)))
    return published_s / len(cases), ours_s / len(cases), worst


# ------------------------------------------------------------- larger random models (speed)


def scale_comparison(args) -> None:
    """A randomly initialised model of a realistic size (no download needed): the value search
    alone (ROME at its default layer, MEMIT at its top layer) against the published loop, then
    whole single edits of ROME, MEMIT and AlphaEdit against bench/published.py."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from pytest_wild.cases.loaders import load_file
    from pytest_wild.editors import get_editor
    from pytest_wild.editors.api import EditorCache
    from pytest_wild.editors.hparams import build_hparams
    from pytest_wild.editors.locate import values as value_search
    from pytest_wild.editors.locate.requests import pad_id, prepare
    from pytest_wild.editors.locate.templates import context_templates
    from pytest_wild.model.architectures import architecture_of
    from pytest_wild.model.load import TINYWORLD_DIR, load_model

    tok = load_model(None, "cpu").tokenizer
    hidden, layers = args.hidden, args.layers
    config = AutoConfig.for_model(args.random_model, vocab_size=args.vocab, hidden_size=hidden,
                                  num_hidden_layers=layers, num_attention_heads=max(1, hidden // 128),
                                  num_key_value_heads=max(1, hidden // 128), intermediate_size=hidden * 27 // 10,
                                  max_position_embeddings=512, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    with torch.device(args.device):  # initialise in place: a 7B model is slow to build on a CPU
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    model.requires_grad_(False)
    arch = architecture_of(model.config)
    cases = load_file(TINYWORLD_DIR / "suite.jsonl")[: args.naive_cases]
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"random {args.random_model}: {params:.0f}M parameters, d {hidden}, {layers} layers, vocab {args.vocab}, "
          f"{args.dtype} on {args.device}; {len(cases)} cases")
    value_search.EARLY_STOP_LOSS = float("-inf")
    pad = pad_id(tok)
    cache = EditorCache(model)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"| {'method':<6} | {'layer':>5} | {'steps':>5} | {'rows':>4} | {'search s':>8} | {'naive s':>7} | "
          f"{'speed-up':>8} | {'δ gap':>7} |")
    print("|--------|-------|-------|------|----------|---------|----------|---------|")
    for name in ("rome", "memit"):
        editor = get_editor(name)
        hp = build_hparams(editor.hparams_type, editor.defaults(model.config, "default"), [])
        layer, at = (hp.layers[0], "mlp") if name == "rome" else (max(hp.layers), "block")
        place = (arch.mlp if at == "mlp" else arch.block).format(layer)
        templates = context_templates(model, tok, hp.context_template_length_params, cache)
        ours_s = naive_s = 0.0
        gaps = []
        for case in cases:
            request = prepare(tok, case, templates, [range(len(templates))], hp.fact_token)
            for timed in (False, True):  # the second run of each: new shapes cost a first call on GPUs
                sync()
                start = time.perf_counter()
                problem = value_search.ValueProblem(model, arch, [request], layer, at, hp.v_loss_layer, pad,
                                                    cache=cache)
                values = value_search.optimise_values(problem, lr=hp.v_lr, steps=hp.v_num_grad_steps,
                                                      kl_factor=hp.kl_factor, weight_decay=hp.v_weight_decay,
                                                      clamp_norm_factor=hp.clamp_norm_factor)
                sync()
                middle = time.perf_counter()
                _, naive = published.value_search(model, request, place, layer, hp, arch, pad, early_stop=float("-inf"))
                sync()
                if timed:
                    ours_s += middle - start
                    naive_s += time.perf_counter() - middle
            gap = (values.delta[0].float() - naive.float()).norm() / naive.float().norm().clamp_min(1e-12)
            gaps.append(float(gap))
        n = len(cases)
        print(f"| {name:<6} | {layer:>5} | {hp.v_num_grad_steps:>5} | {len(templates) + 1:>4} | {ours_s / n:>8.3f} | "
              f"{naive_s / n:>7.3f} | {naive_s / ours_s:>7.1f}x | {max(gaps):>7.1e} |")

    # whole single edits against bench/published.py, statistics from the bundled corpus
    value_search.EARLY_STOP_LOSS = published.EARLY_STOP_LOSS
    loaded = types.SimpleNamespace(model=model, tokenizer=tok)
    print(f"\nwhole edits (statistics: {args.stats_samples} bundled-corpus documents)")
    print(f"| {'method':<9} | {'layers':<11} | {'s/edit':>6} | {'published s/edit':>16} | {'speed-up':>8} | {'ΔW gap':>7} |")
    print("|-----------|-------------|--------|------------------|----------|---------|")
    with tempfile.TemporaryDirectory(prefix="wild-bench-") as cache:
        os.environ["PYTEST_WILD_CACHE"] = cache
        for name in ("rome", "memit", "alphaedit"):
            editor = get_editor(name)
            hp = build_hparams(editor.hparams_type, editor.defaults(model.config, "default"),
                               [("bench", {"mom2_dataset": "tinyworld", "mom2_n_samples": args.stats_samples})])
            compare_whole_edits(name, loaded, cases[:1], hp, cache)  # statistics, factorisations, first shapes
            theirs, ours, gap = compare_whole_edits(name, loaded, cases, hp, cache)
            print(f"| {name:<9} | {','.join(map(str, hp.layers)):<11} | {ours:>6.3f} | {theirs:>16.3f} | "
                  f"{theirs / ours:>7.1f}x | {gap:>7.1e} |")


# ------------------------------------------------------------------------------------ main


def statistics_timing(spec: str | None = None) -> tuple[float, float, int, list[str]]:
    """(cold seconds, warm seconds, tokens, modules): all layers used by the four methods in one
    pass (cold: unless the cache already holds them, as it does for another model's)."""
    from pytest_wild.editors import get_editor
    from pytest_wild.editors.hparams import build_hparams
    from pytest_wild.model import stats
    from pytest_wild.model.load import load_model

    loaded = load_model(spec, "cpu")
    config = loaded.model.config
    needed: dict[tuple, set] = {}
    for name in METHODS:
        editor = get_editor(name)
        hp, _ = stats.published_corpus_or_fallback(
            build_hparams(editor.hparams_type, editor.defaults(config, loaded.profile), []))
        key = (hp.mom2_dataset, hp.mom2_n_samples, hp.mom2_dtype)
        names = {hp.rewrite_module_tmp.format(layer) for layer in hp.layers}
        needed.setdefault(key, set()).update(names)
    cold = warm = 0.0
    tokens, modules = 0, []
    for (corpus, n_samples, dtype), names in needed.items():
        start = time.perf_counter()
        found = stats.second_moments(loaded.model, loaded.tokenizer, sorted(names), corpus, n_samples, dtype)
        cold += time.perf_counter() - start
        start = time.perf_counter()
        stats.second_moments(loaded.model, loaded.tokenizer, sorted(names), corpus, n_samples, dtype)
        warm += time.perf_counter() - start
        tokens = max(tokens, max(m.count for m in found.values()))
        modules += sorted(names)
    return cold, warm, tokens, modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50, help="suite cases edited (and evaluated WILD) per method")
    parser.add_argument("--naive-cases", type=int, default=10,
                        help="cases timed and compared against the published algorithm")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--random-model", metavar="TYPE", help="instead: time the value search on a random model "
                        "of this model_type (llama, qwen2, gpt_neox...) sized by --hidden/--layers/--vocab")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--stats-samples", type=int, default=2000,
                        help="with --random-model: bundled-corpus documents for the second moments")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--model", default=None, help="a named model or a directory (default: the bundled tinyworld); "
                        "ROME, R-ROME, MEMIT and AlphaEdit only")
    parser.add_argument("--suite", default=None, help="cases from this suite (default: tinyworld's bundled suite)")
    parser.add_argument("--context", default="question", help="how each question is put when the edited model "
                        "answers: question, chat, ... (--wild-context's values)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.random_model:
        scale_comparison(args)
        return
    if args.child:
        if args.child in memory.PEER_S_PER_EDIT:
            print(json.dumps(memory.run_memory_method(args.child, args.cases)))
        elif args.child == "ultraedit":
            print(json.dumps(ultraedit.run_ultraedit(args.cases, args.naive_cases, peak_mib, reset_peak, rss_mib)))
        elif args.child in baselines.METHODS:
            print(json.dumps(baselines.run_baseline_method(args.child, args.naive_cases)))
        else:
            print(json.dumps(run_method(args.child, args.cases, args.naive_cases, args.model, args.suite,
                                        args.context)))
        return

    plain = set(memory.PEER_S_PER_EDIT) | set(baselines.METHODS) | {"ultraedit"}
    if args.model is not None and any(name in plain for name in args.methods.split(",")):
        raise SystemExit(f"--methods: {', '.join(sorted(plain))} run on tinyworld only; with --model use "
                         f"{','.join(METHODS)}")
    check_inputs(args)
    with tempfile.TemporaryDirectory(prefix="wild-bench-") as cache:
        if args.model is None:  # tinyworld's statistics are timed cold; a real model's come from the cache
            os.environ["PYTEST_WILD_CACHE"] = cache
        print(f"model: {args.model or 'tinyworld'}  suite: {args.suite or 'tinyworld'}  context: {args.context}  "
              f"threads: {args.threads}  cases: {args.cases}  "
              f"compared with the published algorithm: {args.naive_cases} cases")
        if any(name not in plain for name in args.methods.split(",")):  # they read statistics
            cold, warm, tokens, modules = statistics_timing(args.model)
            print(f"statistics: {len(modules)} modules ({', '.join(modules)}), {tokens} tokens, one pass: "
                  f"{cold:.2f} s {'cold' if args.model is None else 'from the cache as found'}, "
                  f"{warm * 1000:.0f} ms loaded from the cache")
        rows = []
        for name in args.methods.split(","):
            command = [sys.executable, __file__, "--child", name, "--cases", str(args.cases),
                       "--naive-cases", str(args.naive_cases), "--threads", str(args.threads),
                       "--context", args.context]
            command += ["--model", args.model] if args.model else []
            command += ["--suite", args.suite] if args.suite else []
            done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
            if done.returncode != 0:
                sys.stderr.write(done.stderr)
                raise SystemExit(f"{name}: benchmark failed")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    memory_rows = [row for row in rows if row["method"] in memory.PEER_S_PER_EDIT]
    gradient_rows = [row for row in rows if row["method"] == "ultraedit"]
    baseline_rows = [row for row in rows if row["method"] in baselines.METHODS]
    rows = [row for row in rows if row["method"] in METHODS]
    if memory_rows:
        memory.print_memory_table(memory_rows)
    if gradient_rows:
        ultraedit.print_table(gradient_rows)
    if baseline_rows:
        baselines.print_baseline_table(baseline_rows)
    if not rows:
        return
    header = (f"| {'method':<9} | {'layers':<9} | {'s/edit':>6} | {'published s/edit':>16} | {'speed-up':>8} | "
              f"{'ΔW gap':>7} | {'search s':>8} | {'naive s':>7} | {'speed-up':>8} | {'1st edit s':>10} | "
              f"{'peak MiB':>8} | {'+MiB':>5} | {'rel':>5} | {'gen':>5} | {'loc':>5} |")
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")
    for row in rows:
        print(f"| {row['method']:<9} | {','.join(map(str, row['layers'])):<9} | {row['edit_s']:>6.3f} | "
              f"{row['published_s']:>16.3f} | {row['published_s'] / row['edit_s']:>7.1f}x | "
              f"{row['update_gap']:>7.1e} | {row['value_search_s']:>8.3f} | {row['naive_s']:>7.3f} | "
              f"{row['naive_s'] / row['value_search_s']:>7.1f}x | {row['first_edit_s']:>10.2f} | "
              f"{row['peak_mib']:>8.0f} | {row['peak_mib'] - row['baseline_mib']:>5.0f} | "
              f"{row['reliability']:>5.2f} | {row['generalization']:>5.2f} | {row['locality']:>5.2f} |")
    print("s/edit: apply() per single edit on the K compared cases; published: the same edit by "
          "bench/published.py; ΔW gap: largest ‖ΔW − ΔW_published‖/‖ΔW_published‖; search/naive: one "
          "value search (same loss, same steps) in pytest-wild and in the published full-model loop; 1st "
          "edit: templates + statistics from the cache + factorisation; +MiB: peak RSS above the loaded "
          "model; rel/gen/loc: WILD exact-match reliability, generalisation and locality (identical "
          f"tokens) over the first {args.cases} cases.")


if __name__ == "__main__":
    main()
