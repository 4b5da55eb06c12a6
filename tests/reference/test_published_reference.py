"""The editors against an independent, plain implementation of the published algorithms
(bench/published.py: whole-model passes, dense solves) on the bundled model: the same edits
must give the same weight updates."""

import pytest
import torch

from bench import published
from pytest_wild.editors import get_editor
from pytest_wild.editors.api import EditorCache, EditorState, edit
from pytest_wild.editors.hparams import build_hparams
from pytest_wild.editors.locate.alphaedit import PreservedKeys
from pytest_wild.editors.locate.requests import pad_id, prepare
from pytest_wild.editors.locate.templates import context_templates
from pytest_wild.model import stats
from pytest_wild.model.architectures import architecture_of

from ..tiny_models import weights_hash

CASES = ("tw-0001", "tw-0003", "tw-0010")
# float32 forwards summed in another order (prefix reuse, fewer layers) leave the updates
# 0.4e-6 to 1.4e-6 apart (measured); another algorithm or one optimiser step more or less
# moves them far more than this
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    from pytest_wild.cases.loaders import load_file
    from pytest_wild.model.load import TINYWORLD_DIR, load_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTEST_WILD_CACHE", str(tmp_path_factory.mktemp("wild-cache")))
        loaded = load_model(None, "cpu")
        cases = {case.id: case for case in load_file(TINYWORLD_DIR / "suite.jsonl")}
        yield loaded, cases


def setup(loaded, name: str, **overrides):
    model, tok = loaded.model, loaded.tokenizer
    editor = get_editor(name)
    hp = build_hparams(editor.hparams_type, editor.defaults(model.config, loaded.profile),
                       [("test", {"mom2_n_samples": 2000} | overrides)])
    modules = [hp.rewrite_module_tmp.format(layer) for layer in sorted(hp.layers)]
    found = stats.second_moments(model, tok, modules, hp.mom2_dataset, hp.mom2_n_samples, hp.mom2_dtype)
    covariances = {module: found[module].matrix.double() for module in modules}
    templates = context_templates(model, tok, hp.context_template_length_params)
    return editor, hp, modules, covariances, templates


def request_for(tok, case, templates, grouped: bool):
    groups = [[0], list(range(1, len(templates)))] if grouped else [range(len(templates))]
    return prepare(tok, case, templates, groups, "subject_last")


def gap(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).norm() / reference.norm())


def test_rome_matches_the_published_algorithm(bundled):
    loaded, cases = bundled
    model, tok = loaded.model, loaded.tokenizer
    editor, hp, modules, covariances, templates = setup(loaded, "rome")
    (layer,), (module,) = hp.layers, modules
    inverse = torch.inverse(covariances[module])
    digest = weights_hash(model)
    for case_id in CASES:
        saved = published.save_weights(model, modules)
        handle = edit(editor, model, tok, [cases[case_id]], hp)
        ours = published.weight_update(model, module, saved[module])
        handle.restore()
        request = request_for(tok, cases[case_id], templates, grouped=False)
        reference = published.rome_edit(model, request, hp, layer, architecture_of(model.config), inverse,
                                        pad_id(tok))
        published.put_back(model, saved)
        assert gap(ours, reference) < TOLERANCE, case_id
    assert weights_hash(model) == digest


@pytest.mark.parametrize(("overrides", "batches"), [
    ({}, [[CASES[0]], [CASES[1]], list(CASES)]),
    # the loss layer below the last: the NLL reads the final norm and the LM head applied to
    # that layer's output, the KL term the model's output
    ({"v_loss_layer": 2}, [[CASES[1]]]),
], ids=["single-and-batched", "lower-loss-layer"])
def test_memit_matches_the_published_algorithm(bundled, overrides, batches):
    loaded, cases = bundled
    model, tok = loaded.model, loaded.tokenizer
    editor, hp, modules, covariances, templates = setup(loaded, "memit", **overrides)
    arch = architecture_of(model.config)
    digest = weights_hash(model)
    for batch in batches:
        saved = published.save_weights(model, modules)
        handle = edit(editor, model, tok, [cases[c] for c in batch], hp)
        ours = {m: published.weight_update(model, m, saved[m]) for m in modules}
        handle.restore()
        requests = [request_for(tok, cases[c], templates, grouped=True) for c in batch]
        reference = published.memit_edit(model, requests, hp, arch, covariances, pad_id(tok))
        published.put_back(model, saved)
        for module in modules:
            assert gap(ours[module], reference[module]) < TOLERANCE, (batch, module)
    assert weights_hash(model) == digest


def test_alphaedit_matches_the_published_algorithm_over_sequential_edits(bundled):
    """Two edits kept one after the other: the second one's update depends on the first one's
    keys (C_prev), in both implementations."""
    loaded, cases = bundled
    model, tok = loaded.model, loaded.tokenizer
    editor, hp, modules, covariances, templates = setup(loaded, "alphaedit")
    arch = architecture_of(model.config)
    projections = {m: published.nullspace_projection(covariances[m], hp.nullspace_threshold) for m in modules}
    digest = weights_hash(model)
    start = published.save_weights(model, modules)
    ours, handles = [], []
    cache, state = EditorCache(model), EditorState()  # one sequence on one model
    for case_id in CASES[:2]:
        saved = published.save_weights(model, modules)
        handles.append(edit(editor, model, tok, [cases[case_id]], hp, cache=cache, state=state))
        ours.append({m: published.weight_update(model, m, saved[m]) for m in modules})
    for handle in reversed(handles):
        handle.restore()
    assert not state.part("alphaedit", PreservedKeys).c_prev
    cache_c = {m: torch.zeros_like(covariances[m]) for m in modules}
    for case_id, mine in zip(CASES[:2], ours):
        request = request_for(tok, cases[case_id], templates, grouped=True)
        reference = published.alphaedit_edit(model, [request], hp, arch, projections, cache_c, pad_id(tok))
        for module in modules:
            assert gap(mine[module], reference[module]) < TOLERANCE, (case_id, module)
    published.put_back(model, start)
    assert weights_hash(model) == digest
