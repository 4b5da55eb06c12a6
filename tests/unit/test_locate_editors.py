
import pytest
import torch
from transformers import AutoConfig

from pytest_wild.cases.case import Case, Locality, WildInputError
from pytest_wild.editors import get_editor
from pytest_wild.editors.api import EditorCache, EditorState, edit
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.editors.locate.alphaedit import PreservedKeys
from pytest_wild.editors.locate.keys import request_keys
from pytest_wild.editors.locate.requests import locate, pad_id, prepare
from pytest_wild.editors.locate.solves import alphaedit_solve, memit_solve, memit_solve_dense, moments, projection
from pytest_wild.editors.locate.templates import context_templates
from pytest_wild.editors.locate.values import ValueProblem
from pytest_wild.model import stats
from pytest_wild.model.architectures import architecture_of
from pytest_wild.model.tracing import hidden_of, with_hidden
from pytest_wild.model.weights import is_transposed

from ..tiny_models import SIZES, target_logprob, tiny_model, tokenizer, weights_hash

METHODS = ("rome", "r-rome", "memit", "alphaedit")
# Random tiny models pass little from one token to another, so the edit cases put the subject
# last, where δ reaches the prediction directly; QA_CASE is the suite's question layout.
CASE = Case(id="x", prompt="The home town of Kalo Venbri", target="Dorwyn Hill", subject="Kalo Venbri",
            rephrase=None, locality=(Locality("Q: What?", "no"),))
QA_CASE = Case(id="qa", prompt="Q: Where was Kalo Venbri born? A:", target="Dorwyn Hill", subject="Kalo Venbri",
               rephrase=None, locality=())
OTHERS = [Case(id=f"c{i}", prompt=f"The pet kept by {name}", target=pet, subject=name, rephrase=None, locality=())
          for i, (name, pet) in enumerate([("Moma Zalda", "newt"), ("Pahis Briru", "white mouse"),
                                           ("Gerbror Kaltro", "parrot")])]
# Small settings for tiny random models: few statistics documents, few templates, few steps.
TINY = {"mom2_dataset": "tinyworld", "mom2_n_samples": 300, "mom2_dtype": "float64",
        "context_template_length_params": [[5, 2]], "v_num_grad_steps": 15, "v_lr": 0.5, "clamp_norm_factor": 4.0,
        "v_weight_decay": 1e-3}
PER_METHOD = {"rome": {"mom2_adjustment": True}, "r-rome": {"mom2_adjustment": True},
              "memit": {"mom2_update_weight": 20.0}, "alphaedit": {"L2": 1e-3, "nullspace_threshold_mode": "energy",
                                                                 "nullspace_threshold": 0.3}}


def edit_model(model_type: str):
    """A tiny random model whose final norm is scaled up: at initialisation the logits hardly
    depend on the hidden state, so no edit could move them."""
    model, tok = tiny_model(model_type)
    with torch.no_grad():
        model.get_submodule(architecture_of(model.config).ln_f).weight.mul_(30.0)
    return model, tok


@pytest.fixture(autouse=True, scope="module")
def statistics_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTEST_WILD_CACHE", str(tmp_path_factory.mktemp("wild-cache")))
        yield


def hparams_for(name: str, model, **overrides):
    editor = get_editor(name)
    values = editor.defaults(model.config, "default")
    return editor, build_hparams(editor.hparams_type, values, [("test", TINY | PER_METHOD[name] | overrides)])


def fact_output(model, tok, module: str, text: str, subject: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, output) of a module at the subject's last token of `text`."""
    row = locate(tok, text, (text.index(subject), text.index(subject) + len(subject)), "subject_last")
    found = {}
    hook = model.get_submodule(module).register_forward_hook(lambda m, a, o: found.update(k=a[0], v=o))
    with torch.no_grad():
        model(torch.tensor([row.ids]))
    hook.remove()
    return found["k"][0, row.lookup].double(), found["v"][0, row.lookup].double()


def math_delta(model, module: str, before: dict) -> torch.Tensor:
    name = f"{module}.weight"
    delta = (model.state_dict()[name] - before[name]).double()
    return delta.T if is_transposed(model.get_submodule(module)) else delta


# ------------------------------------------------------------------ every method, every model


@pytest.mark.parametrize("model_type", sorted(SIZES))
@pytest.mark.parametrize("name", METHODS)
def test_edit_raises_target_changes_only_its_modules_and_restores_exactly(model_type, name):
    model, tok = edit_model(model_type)
    editor, hp = hparams_for(name, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    digest, logprob = weights_hash(model), target_logprob(model, tok, CASE)
    handle = edit(editor, model, tok, [CASE], hp)
    assert target_logprob(model, tok, CASE) > logprob + 1.0
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    expected = {f"{hp.rewrite_module_tmp.format(layer)}.weight" for layer in hp.layers}
    if name in ("memit", "alphaedit"):
        assert len(hp.layers) >= 2
    assert changed == expected
    handle.restore()
    assert weights_hash(model) == digest


# ------------------------------------------------------------------------------ closed forms


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])  # Conv1D and nn.Linear layouts
def test_rome_update_maps_the_bare_prompt_key_to_the_optimised_value(model_type):
    model, tok = tiny_model(model_type)
    editor, hp = hparams_for("rome", model)
    (layer,) = hp.layers
    module = hp.rewrite_module_tmp.format(layer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    handle = edit(editor, model, tok, [QA_CASE], hp)
    (info,) = handle.info
    key, value = fact_output(model, tok, module, QA_CASE.prompt, QA_CASE.subject)
    torch.testing.assert_close(key.float(), info["key"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(value.float(), info["target"], rtol=1e-4, atol=1e-4)
    delta = math_delta(model, module, before)
    assert torch.linalg.matrix_rank(delta, rtol=1e-6) == 1
    handle.restore()


def test_r_rome_update_maps_the_template_average_key_to_the_optimised_value():
    model, tok = tiny_model("gpt2")
    editor, hp = hparams_for("r-rome", model)
    (layer,) = hp.layers
    module = hp.rewrite_module_tmp.format(layer)
    cache = EditorCache(model)
    handle = edit(editor, model, tok, [QA_CASE], hp, cache=cache)
    (info,) = handle.info
    templates = context_templates(model, tok, hp.context_template_length_params, cache)
    outs = [fact_output(model, tok, module, t.replace("{}", QA_CASE.prompt), QA_CASE.subject) for t in templates]
    torch.testing.assert_close(torch.stack([k for k, _ in outs]).mean(0).float(), info["key"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack([v for _, v in outs]).mean(0).float(), info["target"], rtol=1e-4,
                               atol=1e-4)
    handle.restore()


def random_moment(d: int, seed: int = 0, spectrum=None):
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    values = spectrum if spectrum is not None else torch.logspace(-3, 1, d, dtype=torch.float64)
    matrix = basis @ torch.diag(values) @ basis.T
    return stats.SecondMoment(matrix, 1000, f"test-{d}-{seed}-{float(values.sum())}"), basis, values


def test_memit_solve_equals_an_independent_least_squares_solution():
    d_k, d_v, n, weight = 24, 10, 3, 7.5
    moment, basis, values = random_moment(d_k)
    generator = torch.Generator().manual_seed(1)
    keys = torch.randn(d_k, n, generator=generator, dtype=torch.float64)
    resid = torch.randn(d_v, n, generator=generator, dtype=torch.float64)
    # argmin_Δ ‖Δ K − R‖² + λ ‖Δ C^½‖²: ordinary least squares on the stacked system
    root = basis @ torch.diag(values.sqrt()) @ basis.T
    design = torch.cat([keys, weight ** 0.5 * root], dim=1).T  # (n + d_k, d_k)
    rhs = torch.cat([resid, torch.zeros(d_v, d_k, dtype=torch.float64)], dim=1).T
    expected = torch.linalg.lstsq(design, rhs).solution.T
    torch.testing.assert_close(memit_solve(moment, keys, resid, weight), expected, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(memit_solve_dense(moment.matrix, keys, resid, weight), expected, rtol=1e-8, atol=1e-10)


def test_alphaedit_update_leaves_preserved_keys_unchanged_and_both_solves_agree():
    d_k, d_v, n = 32, 12, 4
    spectrum = torch.cat([torch.full((12,), 1e-3), torch.linspace(0.5, 5.0, 20)]).double()
    moment, basis, _ = random_moment(d_k, seed=2, spectrum=spectrum)
    proj, kept = projection(moment, 2e-2, "absolute", "cpu")
    assert kept == 12
    generator = torch.Generator().manual_seed(3)
    keys = torch.randn(d_k, n, generator=generator, dtype=torch.float64)
    resid = torch.randn(d_v, n, generator=generator, dtype=torch.float64)
    delta = alphaedit_solve(proj, keys, resid, None, 1.0)
    preserved = basis[:, 12:]  # the large-eigenvalue directions
    assert (delta @ preserved).abs().max() < 1e-10
    assert (delta @ keys - resid).norm() < resid.norm()  # and it does write something
    zero = alphaedit_solve(proj, keys, resid, torch.zeros(d_k, d_k, dtype=torch.float64), 1.0)
    torch.testing.assert_close(zero, delta, rtol=1e-8, atol=1e-10)
    c_prev = keys[:, :2] @ keys[:, :2].T
    with_prev = alphaedit_solve(proj, keys, resid, c_prev, 1.0)
    assert (with_prev @ preserved).abs().max() < 1e-10
    _, in_half = projection(moment, 0.5, "energy", "cpu")
    shares = spectrum.sort().values.cumsum(0) / spectrum.sum()
    assert in_half == int((shares <= 0.5).sum()) == 25  # the smallest directions holding half the trace


def test_alphaedit_on_a_model_writes_only_into_the_null_space():
    model, tok = tiny_model("llama")
    editor, hp = hparams_for("alphaedit", model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cache = EditorCache(model)
    handle = edit(editor, model, tok, [CASE], hp, cache=cache)
    found = moments(model, tok, hp, hp.layers, cache)
    for layer in hp.layers:
        module = hp.rewrite_module_tmp.format(layer)
        proj, kept = projection(found[layer], hp.nullspace_threshold, hp.nullspace_threshold_mode, "cpu")
        delta = math_delta(model, module, before)
        assert 0 < kept < proj.shape[0] and delta.norm() > 0
        assert (delta - delta @ proj).norm() <= 1e-4 * delta.norm()
    handle.restore()


def test_alphaedit_state_accumulates_sequential_edits_and_restores_rewind_it():
    model, tok = tiny_model("gpt2")
    editor, hp = hparams_for("alphaedit", model)
    cache, state = EditorCache(model), EditorState()
    preserved = state.part("alphaedit", PreservedKeys)
    assert preserved.c_prev == {}
    digest = weights_hash(model)
    first = edit(editor, model, tok, [CASE], hp, cache=cache, state=state)
    after_first = dict(preserved.c_prev)
    assert set(after_first) == {hp.rewrite_module_tmp.format(layer) for layer in hp.layers}
    second = edit(editor, model, tok, [OTHERS[0]], hp, cache=cache, state=state)
    name = hp.rewrite_module_tmp.format(hp.layers[0])
    assert not torch.equal(preserved.c_prev[name], after_first[name])
    second.restore()
    assert all(preserved.c_prev[k] is v for k, v in after_first.items())
    first.restore()
    assert preserved.c_prev == {} and weights_hash(model) == digest


@pytest.mark.parametrize("model_type", ["gpt2", "gptj", "llama"])
def test_alphaedit_c_prev_holds_the_keys_read_again_on_the_edited_model(model_type):
    """The editor adds to C_prev the keys it solved with, not keys read after the edit as the
    published code does: they must be the same (a module's input depends neither on its own
    weight nor on the layers above it)."""
    model, tok = edit_model(model_type)
    editor, hp = hparams_for("alphaedit", model)
    cases = [CASE, OTHERS[0]]
    cache, state = EditorCache(model), EditorState()
    handle = edit(editor, model, tok, cases, hp, cache=cache, state=state)
    templates = context_templates(model, tok, hp.context_template_length_params, cache)
    groups = [[0], list(range(1, len(templates)))]
    requests = [prepare(tok, case, templates, groups, hp.fact_token) for case in cases]
    names = [hp.rewrite_module_tmp.format(layer) for layer in sorted(hp.layers)]
    assert len(names) >= 2  # a lower layer's update changes the keys of the layers above
    keys, _ = request_keys(model, architecture_of(model.config), requests, names, pad_id(tok))
    for name in names:
        expected = keys[name].T @ keys[name]
        assert (state.part("alphaedit", PreservedKeys).c_prev[name].double() - expected).norm() <= 1e-5 * expected.norm(), name
    handle.restore()


@pytest.mark.parametrize("name", ["memit", "alphaedit"])
def test_batch_edit_writes_several_cases_in_one_update(name):
    model, tok = edit_model("qwen2")
    editor, hp = hparams_for(name, model)
    cases = [CASE, *OTHERS]
    before = [target_logprob(model, tok, case) for case in cases]
    handle = edit(editor, model, tok, cases, hp)
    assert len(handle.info) == len(hp.layers) and handle.info[0]["keys"].shape[0] == len(cases)
    after = [target_logprob(model, tok, case) for case in cases]
    assert all(a > b + 1.0 for a, b in zip(after, before))
    handle.restore()


def test_rome_edits_several_cases_one_after_the_other():
    model, tok = edit_model("gptj")
    editor, hp = hparams_for("rome", model)
    digest = weights_hash(model)
    before = [target_logprob(model, tok, case) for case in OTHERS[:2]]
    handle = edit(editor, model, tok, OTHERS[:2], hp)
    assert [info["case"] for info in handle.info] == ["c0", "c1"]
    assert all(target_logprob(model, tok, c) > b + 1.0 for c, b in zip(OTHERS[:2], before))
    handle.restore()
    assert weights_hash(model) == digest


# --------------------------------------------------------------------------- machinery


@pytest.mark.parametrize("model_type", sorted(SIZES))
def test_value_search_runs_only_upper_blocks_and_matches_the_full_model(model_type):
    model, tok = tiny_model(model_type)
    arch = architecture_of(model.config)
    templates = context_templates(model, tok, [[5, 2], [8, 1]])
    requests = [prepare(tok, case, templates, [range(len(templates))]) for case in (CASE, OTHERS[1])]
    calls = []
    model.get_submodule(arch.block.format(0)).register_forward_hook(lambda *a: calls.append(0))
    for at in ("mlp", "block"):
        problem = ValueProblem(model, arch, requests, layer=1, at=at, loss_layer=3, pad=tok.eos_token_id)
        plain = ValueProblem(model, arch, requests, layer=1, at=at, loss_layer=3, pad=tok.eos_token_id,
                             reuse_prefix=False)
        assert problem.split > 0 and plain.split == 0
        calls.clear()
        token_logp, kl_logp = problem.log_probs(torch.zeros(2, model.config.hidden_size))
        assert calls == []  # nothing below the edit layer runs during the search
        # the same numbers from the whole model on each row alone
        rows = [list(row.ids) + list(q.target[:-1]) for q in requests for row in q.prompts]
        expected = []
        for row_ids, q in zip(rows, [q for q in requests for _ in q.prompts]):
            with torch.no_grad():
                logp = model(torch.tensor([row_ids])).logits[0].log_softmax(-1)
            start = len(row_ids) - len(q.target)
            expected += [logp[start + j, t].item() for j, t in enumerate(q.target)]
        torch.testing.assert_close(token_logp, torch.tensor(expected), rtol=1e-4, atol=1e-4)
        shifted = torch.randn(2, model.config.hidden_size)
        torch.testing.assert_close(problem.log_probs(shifted)[0], plain.log_probs(shifted)[0], rtol=1e-5, atol=1e-5)
        # and with δ: the whole model, δ added by a hook at the fact token of one row at a time
        place = (arch.mlp if at == "mlp" else arch.block).format(1)
        owners = [r for r, q in enumerate(requests) for _ in q.prompts]
        lookups = [row.lookup for q in requests for row in q.prompts]
        expected = []
        for row_ids, q, r, lookup in zip(rows, [q for q in requests for _ in q.prompts], owners, lookups):
            def add(module, args, out, r=r, lookup=lookup):
                hidden = hidden_of(out).clone()
                hidden[0, lookup] += shifted[r]
                return with_hidden(out, hidden)
            handle = model.get_submodule(place).register_forward_hook(add)
            with torch.no_grad():
                logp = model(torch.tensor([row_ids])).logits[0].log_softmax(-1)
            handle.remove()
            start = len(row_ids) - len(q.target)
            expected += [logp[start + j, t].item() for j, t in enumerate(q.target)]
        torch.testing.assert_close(problem.log_probs(shifted)[0], torch.tensor(expected), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(problem.log_probs(shifted)[1], plain.log_probs(shifted)[1], rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            kl_expected = torch.stack([model(torch.tensor([q.kl.ids])).logits[0, q.kl.lookup].log_softmax(-1)
                                       for q in requests])
        torch.testing.assert_close(kl_logp, kl_expected, rtol=1e-4, atol=1e-4)


def bos_tokenizer():
    """The bundled tokenizer, made to put <|endoftext|> in front of every text (like Llama's BOS)."""
    from tokenizers.processors import TemplateProcessing

    tok = tokenizer()
    bos = tok.eos_token
    tok.backend_tokenizer.post_processor = TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tok.eos_token_id)])
    return tok


@pytest.mark.parametrize("bos", [False, True])
def test_fact_token_is_found_on_the_ids_fed_to_the_model(bos):
    tok = bos_tokenizer() if bos else tokenizer()
    templates = ["{}", "Some words here. {}"]
    request = prepare(tok, QA_CASE, templates, [[0, 1]])
    for row, template in zip(request.prompts, templates):
        text = template.replace("{}", QA_CASE.prompt)
        assert list(row.ids) == tok(text)["input_ids"]
        assert (row.ids[0] == tok.eos_token_id) == bos
        assert tok.decode(row.ids[: row.lookup + 1]).endswith("Kalo Venbri")
        assert not tok.decode(row.ids[: row.lookup]).endswith("Kalo Venbri")
    assert tok.decode(request.kl.ids[: request.kl.lookup + 1]).endswith("Kalo Venbri")
    first = prepare(tok, QA_CASE, templates, [[0]], "subject_first")
    assert tok.decode(first.prompts[0].ids[first.prompts[0].lookup]).strip() in "Kalo"
    last = prepare(tok, QA_CASE, templates, [[0]], "last")
    assert last.prompts[0].lookup == len(last.prompts[0].ids) - 1
    spaced = prepare(tok, Case(**{**QA_CASE.__dict__, "target": " Dorwyn Hill"}), templates, [[0]])
    assert spaced.target == request.target and tok.decode(request.target) == " Dorwyn Hill"
    with pytest.raises(WildInputError, match="does not occur"):
        prepare(tok, Case(**{**QA_CASE.__dict__, "subject": "Nobody"}), templates, [[0]])


def test_rome_edits_with_a_bos_tokenizer():
    model, _ = edit_model("gptj")
    tok = bos_tokenizer()
    editor, hp = hparams_for("rome", model)
    logprob = target_logprob(model, tok, CASE)
    handle = edit(editor, model, tok, [CASE], hp)
    assert target_logprob(model, tok, CASE) > logprob + 1.0
    handle.restore()


def test_context_templates_are_sampled_once_per_model_and_deterministic():
    model, tok = tiny_model("gpt2")
    cache = EditorCache(model)
    first = context_templates(model, tok, [[5, 10], [10, 10]], cache)
    assert len(first) == 21 and first[0] == "{}" and all(t.endswith(". {}") for t in first[1:])
    assert all(t.count("{}") == 1 for t in first)
    assert cache.keys() == [("context templates", ((5, 10), (10, 10)))]
    assert context_templates(model, tok, [[5, 10], [10, 10]], cache) == first
    other, _ = tiny_model("gpt2")
    assert context_templates(other, tok, [[5, 10], [10, 10]]) == first  # same weights, same seed
    assert len(context_templates(model, tok, [[10, 5]])) == 6


def test_published_defaults_for_real_model_shapes():
    rome, memit, alpha = (get_editor(n) for n in ("rome", "memit", "alphaedit"))
    llama = AutoConfig.for_model("llama", num_hidden_layers=32)
    qwen = AutoConfig.for_model("qwen2", num_hidden_layers=28)
    gptj = AutoConfig.for_model("gptj", n_layer=28)
    gpt2_xl = AutoConfig.for_model("gpt2", n_layer=48)
    neox = AutoConfig.for_model("gpt_neox", num_hidden_layers=44)
    assert rome.defaults(llama, "default")["layers"] == [5] and rome.defaults(qwen, "default")["layers"] == [5]
    assert rome.defaults(gptj, "default")["layers"] == [5] and rome.defaults(gpt2_xl, "default")["layers"] == [17]
    assert rome.defaults(neox, "default")["layers"] == [15]
    assert rome.defaults(llama, "default")["v_loss_layer"] == 31
    assert memit.defaults(llama, "default")["layers"] == [4, 5, 6, 7, 8]
    assert memit.defaults(gptj, "default")["layers"] == [3, 4, 5, 6, 7, 8]
    assert memit.defaults(gpt2_xl, "default")["layers"] == [13, 14, 15, 16, 17]
    assert memit.defaults(gpt2_xl, "default")["mom2_update_weight"] == 20000
    assert alpha.defaults(qwen, "default")["L2"] == 1 and alpha.defaults(llama, "default")["L2"] == 10
    assert get_editor("r-rome").defaults(llama, "default")["original_implementation"] is False
    assert rome.defaults(llama, "default")["original_implementation"] is True
    small = AutoConfig.for_model("llama", num_hidden_layers=16)
    assert rome.defaults(small, "default")["layers"] == [2]
    assert memit.defaults(small, "default")["layers"] == [3, 4]
    assert memit.defaults(AutoConfig.for_model("gpt2", n_layer=12), "default")["layers"] == [3, 4]


def test_easyedit_hparams_files_load():
    memit_file = {"alg_name": "MEMIT", "model_name": "./hugging_cache/llama-2-7b", "stats_dir": "./data/stats",
                  "device": 1, "layers": [4, 5, 6, 7, 8], "clamp_norm_factor": 4, "layer_selection": "all",
                  "fact_token": "subject_last", "v_num_grad_steps": 25, "v_lr": "5e-1", "v_loss_layer": 31,
                  "v_weight_decay": "1e-3", "kl_factor": 0.0625, "mom2_adjustment": True,
                  "mom2_update_weight": 15000, "rewrite_module_tmp": "model.layers.{}.mlp.down_proj",
                  "layer_module_tmp": "model.layers.{}", "mlp_module_tmp": "model.layers.{}.mlp",
                  "attn_module_tmp": "model.layers.{}.self_attn", "ln_f_module": "model.norm",
                  "lm_head_module": "lm_head", "mom2_dataset": "wikipedia", "mom2_n_samples": 100000,
                  "mom2_dtype": "float32"}
    alpha_file = memit_file | {"alg_name": "AlphaEdit", "P_loc": "./null_space_project.pt",
                               "nullspace_threshold": "2e-2", "L2": 1}
    rome_file = {k: v for k, v in memit_file.items() if k not in ("mom2_update_weight", "layer_selection")} | {
        "alg_name": "R-ROME", "layers": [5], "context_template_length_params": [[5, 10], [10, 10]],
        "model_parallel": False, "fp16": False, "mom2_adjustment": False}
    llama = AutoConfig.for_model("llama", num_hidden_layers=32)
    for name, data in (("memit", memit_file), ("alphaedit", alpha_file), ("r-rome", rome_file)):
        editor = get_editor(name)
        hp = build_hparams(editor.hparams_type, editor.defaults(llama, "default"), [("easyedit.yaml", data)])
        assert hp.layers == data["layers"] and hp.v_lr == 0.5 and hp.mom2_dataset == "wikipedia"
    assert hp.context_template_length_params == [[5, 10], [10, 10]]


def test_bad_layers_and_edits_that_fail_leave_the_model_unchanged():
    model, tok = tiny_model("gpt2")
    editor, hp = hparams_for("memit", model, layers=[1, 7])
    with pytest.raises(WildInputError, match="layers"):
        edit(editor, model, tok, [CASE], hp)
    digest = weights_hash(model)
    editor, hp = hparams_for("rome", model)
    bad = Case(id="bad", prompt="Q: Who? A:", target="x", subject="Kalo", rephrase=None, locality=())
    with pytest.raises(WildInputError, match="does not occur"):
        edit(editor, model, tok, [CASE, bad], hp)
    assert weights_hash(model) == digest


# ------------------------------------------------------------------------- bundled model


@pytest.fixture(scope="module")
def tinyworld():
    from pytest_wild.cases.loaders import load_file
    from pytest_wild.model.load import TINYWORLD_DIR, load_model

    loaded = load_model(None, "cpu")
    cases = {case.id: case for case in load_file(TINYWORLD_DIR / "suite.jsonl")}
    return loaded, cases


@pytest.mark.parametrize("name", METHODS)
def test_each_method_makes_the_bundled_model_answer_the_target(tinyworld, name):
    from pytest_wild.generation.engine import Engine
    from pytest_wild.scores.answers import exact_match

    loaded, cases = tinyworld
    model, tok = loaded.model, loaded.tokenizer
    editor = get_editor(name)
    # the tuned tinyworld defaults, on a 2000-document statistics sample to stay quick
    hp = build_hparams(editor.hparams_type, editor.defaults(model.config, loaded.profile),
                       [("test", {"mom2_n_samples": 2000})])
    engine = Engine(model, tok)
    digest = weights_hash(model)
    for case in (cases["tw-0003"], cases["tw-0002"]):  # a held-out fact and a changed one
        before = engine.generate([case.prompt, case.rephrase])
        assert not exact_match(before[0].text, case.target)
        handle = edit(editor, model, tok, [case], hp)
        after = engine.generate([case.prompt, case.rephrase])
        handle.restore()
        assert exact_match(after[0].text, case.target) and exact_match(after[1].text, case.target)
    assert weights_hash(model) == digest


def test_rome_search_skips_the_edited_block_only_when_its_mlp_output_adds_to_the_residual():
    model, tok = tiny_model("llama")
    arch = architecture_of(model.config)
    templates = context_templates(model, tok, [[5, 2]])
    request = prepare(tok, QA_CASE, templates, [range(len(templates))])
    problem = ValueProblem(model, arch, [request], layer=1, at="mlp", loss_layer=3, pad=tok.eos_token_id)
    assert problem.residual and problem.start == 2
    # a block that squashes its output: δ on the MLP output is no longer δ on the block output
    model.get_submodule(arch.block.format(1)).register_forward_hook(
        lambda m, a, out: with_hidden(out, torch.tanh(hidden_of(out))))
    squashed = ValueProblem(model, arch, [request], layer=1, at="mlp", loss_layer=3, pad=tok.eos_token_id)
    assert not squashed.residual and squashed.start == 1
    plain = ValueProblem(model, arch, [request], layer=1, at="mlp", loss_layer=3, pad=tok.eos_token_id,
                         reuse_prefix=False)
    shift = torch.randn(1, model.config.hidden_size)
    torch.testing.assert_close(squashed.log_probs(shift)[0], plain.log_probs(shift)[0], rtol=1e-5, atol=1e-5)
