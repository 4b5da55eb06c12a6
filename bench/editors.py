"""Locate-then-edit benchmark: ROME, R-ROME, MEMIT and AlphaEdit on the bundled tinyworld model.

    python bench/editors.py [--cases N] [--naive-cases K] [--methods rome,memit] [--threads T]
    python bench/editors.py --random-model llama --hidden 2048 --layers 16 --device cuda

For each method, in its own process (so peak memory is its own): seconds per single edit
(`apply`, templates and statistics already loaded), peak resident memory, WILD reliability /
generalisation / locality over the first N suite cases, and the value search (the δ
optimisation, the bulk of an edit) timed against a naive version of the published loop in the
same process: the whole model and the full-vocabulary softmax over every position at every
step, same loss, same steps (early stopping off in both), right padding. Before that, the
second-moment statistics are computed cold for every layer the methods use, in one pass, into
a fresh cache directory, and loaded back warm.
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

import torch

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


# ------------------------------------------------------------------ the naive reference loop


def naive_value_search(model, arch, request, layer: int, at: str, hp, pad: int) -> torch.Tensor:
    """The published optimisation: every step runs the whole model on the right-padded batch
    (rewriting prompts + the KL prompt) with δ added by a hook, takes the log-softmax over the
    full vocabulary at every position, and reads the target and KL terms from it."""
    from pytest_wild.batching import right_pad
    from pytest_wild.editors.locate import hidden_of, with_hidden

    device = next(model.parameters()).device
    rows = [list(row.ids) + list(request.target[:-1]) for row in request.rows] + [list(request.kl.ids)]
    lookups = [row.lookup for row in request.rows] + [request.kl.lookup]
    ids, mask = right_pad(rows, pad, device)
    n_rewrite, n_target = len(request.rows), len(request.target)
    targets = torch.full((n_rewrite, ids.shape[1]), -100, device=device)
    for i, row in enumerate(request.rows):
        end = len(row.ids) + n_target - 1
        targets[i, end - n_target : end] = torch.tensor(request.target, device=device)
    place = (arch.mlp if at == "mlp" else arch.block).format(layer)
    delta = torch.zeros(model.config.hidden_size, requires_grad=True, device=device)
    optimizer = torch.optim.Adam([delta], lr=hp.v_lr)
    state = {"init": None}

    def add(module, args, output):
        hidden = hidden_of(output)
        if state["init"] is None:
            state["init"] = hidden[0, lookups[0]].detach().clone()
        hidden = hidden.clone()
        for i, index in enumerate(lookups):
            hidden[i, index] += delta
        return with_hidden(output, hidden)

    kl_init = None
    handle = model.get_submodule(place).register_forward_hook(add)
    try:
        for iteration in range(hp.v_num_grad_steps):
            optimizer.zero_grad()
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            kl_logp = torch.log_softmax(logits[n_rewrite, lookups[-1]][None], dim=-1)
            if kl_init is None:
                kl_init = kl_logp.detach().clone()
            # targets sit at the positions that predict them (the last T of each row's input)
            log_probs = torch.log_softmax(logits[:n_rewrite], dim=2)
            picked = torch.gather(log_probs, 2, torch.where(targets != -100, targets, 0)[:, :, None])[:, :, 0]
            nll = -(picked * (targets != -100).float()).sum(1) / n_target
            kl = hp.kl_factor * torch.nn.functional.kl_div(kl_init, kl_logp, log_target=True, reduction="batchmean")
            decay = hp.v_weight_decay * delta.norm() / state["init"].norm() ** 2
            loss = nll.mean() + kl + decay
            if iteration == hp.v_num_grad_steps - 1:
                break
            loss.backward()
            optimizer.step()
            limit = hp.clamp_norm_factor * state["init"].norm()
            if delta.norm() > limit:
                with torch.no_grad():
                    delta[...] = delta * limit / delta.norm()
    finally:
        handle.remove()
    return delta.detach()


# ------------------------------------------------------------------------------ one method


def run_method(name: str, n_cases: int, naive_cases: int) -> dict:
    from pytest_wild.architectures import architecture_of
    from pytest_wild.editors import get_editor, locate
    from pytest_wild.generation import Engine
    from pytest_wild.hparams import build_hparams
    from pytest_wild.loaders import load_file
    from pytest_wild.model import TINYWORLD_DIR, load_model
    from pytest_wild.scores import exact_match

    loaded = load_model(None, "cpu")
    model, tok = loaded.model, loaded.tokenizer
    arch = architecture_of(model.config)
    cases = load_file(TINYWORLD_DIR / "suite.jsonl")[:n_cases]
    editor = get_editor(name)
    hp = build_hparams(editor.hparams_type, editor.defaults(model.config, loaded.profile), [])
    baseline = rss_mib()
    reset_peak()  # the peak below is the editing phase's, not the model loading's

    start = time.perf_counter()
    editor.apply(model, tok, [cases[0]], hp).restore()  # templates, statistics, factorisations
    warmup = time.perf_counter() - start

    engine = Engine(model, tok)
    edit_seconds, rel, gen, loc, n_loc = [], 0.0, 0.0, 0, 0
    for case in cases:
        questions = [case.prompt, case.rephrase] + [item.question for item in case.locality]
        before = engine.generate(questions)
        start = time.perf_counter()
        handle = editor.apply(model, tok, [case], hp)
        edit_seconds.append(time.perf_counter() - start)
        after = engine.generate(questions)
        handle.restore()
        rel += exact_match(after[0].text, case.target)
        gen += exact_match(after[1].text, case.target)
        loc += sum(a.token_ids == b.token_ids for a, b in zip(after[2:], before[2:]))
        n_loc += len(case.locality)

    peak = peak_mib()

    # the value search alone, ours against the naive loop, same steps (no early stop)
    locate.EARLY_STOP_LOSS = float("-inf")
    layer, at = (hp.layers[0], "mlp") if name in ("rome", "r-rome") else (max(hp.layers), "block")
    templates = locate.context_templates(model, tok, hp.context_template_length_params)
    pad = locate.pad_id(tok)
    ours_s = naive_s = 0.0
    gaps = []
    for case in cases[:naive_cases]:
        request = locate.prepare(tok, case, templates, [range(len(templates))], hp.fact_token)
        start = time.perf_counter()
        problem = locate.ValueProblem(model, arch, [request], layer, at, hp.v_loss_layer, pad)
        values = locate.optimise_values(problem, lr=hp.v_lr, steps=hp.v_num_grad_steps, kl_factor=hp.kl_factor,
                                        weight_decay=hp.v_weight_decay, clamp_norm_factor=hp.clamp_norm_factor)
        ours_s += time.perf_counter() - start
        start = time.perf_counter()
        naive = naive_value_search(model, arch, request, layer, at, hp, pad)
        naive_s += time.perf_counter() - start
        gaps.append(float((values.delta[0] - naive).norm() / naive.norm().clamp_min(1e-12)))
    return {"method": name, "cases": len(cases), "sec_per_edit": sum(edit_seconds) / len(edit_seconds),
            "first_edit_s": warmup, "reliability": rel / len(cases), "generalization": gen / len(cases),
            "locality": loc / max(n_loc, 1), "peak_mib": peak, "baseline_mib": baseline,
            "value_search_s": ours_s / max(naive_cases, 1), "naive_s": naive_s / max(naive_cases, 1),
            "delta_gap": max(gaps) if gaps else 0.0, "steps": hp.v_num_grad_steps, "layers": hp.layers}


# ------------------------------------------------------------- larger random models (speed)


def scale_comparison(args) -> None:
    """The value search alone on a randomly initialised model of a realistic size (no download
    needed): ROME at its default layer and MEMIT at its top layer, against the naive loop."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from pytest_wild.architectures import architecture_of
    from pytest_wild.editors import get_editor, locate
    from pytest_wild.hparams import build_hparams
    from pytest_wild.loaders import load_file
    from pytest_wild.model import TINYWORLD_DIR, load_model

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
    locate.EARLY_STOP_LOSS = float("-inf")
    pad = locate.pad_id(tok)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"| {'method':<6} | {'layer':>5} | {'steps':>5} | {'rows':>4} | {'search s':>8} | {'naive s':>7} | "
          f"{'speed-up':>8} | {'δ gap':>7} |")
    print("|--------|-------|-------|------|----------|---------|----------|---------|")
    for name in ("rome", "memit"):
        editor = get_editor(name)
        hp = build_hparams(editor.hparams_type, editor.defaults(model.config, "default"), [])
        layer, at = (hp.layers[0], "mlp") if name == "rome" else (max(hp.layers), "block")
        templates = locate.context_templates(model, tok, hp.context_template_length_params)
        ours_s = naive_s = 0.0
        gaps = []
        for case in cases:
            request = locate.prepare(tok, case, templates, [range(len(templates))], hp.fact_token)
            for timed in (False, True):  # the second run of each: new shapes cost a first call on GPUs
                sync()
                start = time.perf_counter()
                problem = locate.ValueProblem(model, arch, [request], layer, at, hp.v_loss_layer, pad)
                values = locate.optimise_values(problem, lr=hp.v_lr, steps=hp.v_num_grad_steps,
                                                kl_factor=hp.kl_factor, weight_decay=hp.v_weight_decay,
                                                clamp_norm_factor=hp.clamp_norm_factor)
                sync()
                middle = time.perf_counter()
                naive = naive_value_search(model, arch, request, layer, at, hp, pad)
                sync()
                if timed:
                    ours_s += middle - start
                    naive_s += time.perf_counter() - middle
            gap = (values.delta[0].float() - naive.float()).norm() / naive.float().norm().clamp_min(1e-12)
            gaps.append(float(gap))
        n = len(cases)
        print(f"| {name:<6} | {layer:>5} | {hp.v_num_grad_steps:>5} | {len(templates) + 1:>4} | {ours_s / n:>8.3f} | "
              f"{naive_s / n:>7.3f} | {naive_s / ours_s:>7.1f}x | {max(gaps):>7.1e} |")


# ------------------------------------------------------------------------------------ main


def statistics_timing() -> tuple[float, float, int, list[str]]:
    """(cold seconds, warm seconds, tokens, modules): all layers used by the four methods in one pass."""
    from pytest_wild import stats
    from pytest_wild.editors import get_editor
    from pytest_wild.model import load_model

    loaded = load_model(None, "cpu")
    config = loaded.model.config
    needed: dict[tuple, set] = {}
    for name in METHODS:
        defaults = get_editor(name).defaults(config, loaded.profile)
        key = (defaults["mom2_dataset"], defaults["mom2_n_samples"], defaults["mom2_dtype"])
        names = {defaults["rewrite_module_tmp"].format(layer) for layer in defaults["layers"]}
        needed.setdefault(key, set()).update(names)
    cold = warm = 0.0
    tokens, modules = 0, []
    for (corpus, n_samples, dtype), names in needed.items():
        start = time.perf_counter()
        found = stats.second_moments(loaded.model, loaded.tokenizer, sorted(names), corpus, n_samples, dtype)
        cold += time.perf_counter() - start
        stats.clear_memory()
        start = time.perf_counter()
        stats.second_moments(loaded.model, loaded.tokenizer, sorted(names), corpus, n_samples, dtype)
        warm += time.perf_counter() - start
        tokens = max(tokens, max(m.count for m in found.values()))
        modules += sorted(names)
    return cold, warm, tokens, modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50, help="suite cases edited (and evaluated WILD) per method")
    parser.add_argument("--naive-cases", type=int, default=5, help="cases for the value-search comparison")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--random-model", metavar="TYPE", help="instead: time the value search on a random model "
                        "of this model_type (llama, qwen2, gpt_neox...) sized by --hidden/--layers/--vocab")
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.random_model:
        scale_comparison(args)
        return
    if args.child:
        print(json.dumps(run_method(args.child, args.cases, args.naive_cases)))
        return

    with tempfile.TemporaryDirectory(prefix="wild-bench-") as cache:
        os.environ["PYTEST_WILD_CACHE"] = cache
        cold, warm, tokens, modules = statistics_timing()
        print(f"model: tinyworld  threads: {args.threads}  cases: {args.cases}  "
              f"value-search comparison: {args.naive_cases} cases")
        print(f"statistics: {len(modules)} modules ({', '.join(modules)}), {tokens} tokens, one pass: "
              f"{cold:.2f} s cold, {warm * 1000:.0f} ms loaded from the cache")
        rows = []
        for name in args.methods.split(","):
            command = [sys.executable, __file__, "--child", name, "--cases", str(args.cases),
                       "--naive-cases", str(args.naive_cases), "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
            if done.returncode != 0:
                sys.stderr.write(done.stderr)
                raise SystemExit(f"{name}: benchmark failed")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    header = (f"| {'method':<9} | {'layers':<7} | {'s/edit':>6} | {'1st edit s':>10} | {'peak MiB':>8} | "
              f"{'+MiB':>5} | {'search s':>8} | {'naive s':>7} | {'speed-up':>8} | {'δ gap':>7} | "
              f"{'rel':>5} | {'gen':>5} | {'loc':>5} |")
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")
    for row in rows:
        print(f"| {row['method']:<9} | {','.join(map(str, row['layers'])):<7} | {row['sec_per_edit']:>6.3f} | "
              f"{row['first_edit_s']:>10.2f} | {row['peak_mib']:>8.0f} | "
              f"{row['peak_mib'] - row['baseline_mib']:>5.0f} | {row['value_search_s']:>8.3f} | "
              f"{row['naive_s']:>7.3f} | {row['naive_s'] / row['value_search_s']:>7.1f}x | "
              f"{row['delta_gap']:>7.1e} | {row['reliability']:>5.2f} | {row['generalization']:>5.2f} | "
              f"{row['locality']:>5.2f} |")
    print("s/edit: apply() per single edit, after the first; 1st edit: templates + statistics from the cache + "
          "factorisation; +MiB: peak RSS above the loaded model; search/naive: one value search (same loss, "
          "same steps) in pytest-wild and in the published full-model loop; δ gap: ‖δ − δ_naive‖/‖δ_naive‖; "
          "rel/gen/loc: WILD exact-match reliability, generalisation and locality (identical tokens).")


if __name__ == "__main__":
    main()
