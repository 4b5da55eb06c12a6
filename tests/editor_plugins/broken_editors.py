"""Editors broken on purpose, each in one way `--wild-conformance` must name: the example
rank-one method of examples/editor-plugin with one fault each. Tests register them through
a `pytest_wild.editors` entry point, as a plugin would (tests/integration/test_editor_plugins.py)."""

from __future__ import annotations

import random

import wild_rank_one as rank_one

from pytest_wild.api import Editor, add_update, architecture_of

_LAST: list = []  # LEAKY's fault: the case it edited last, kept in a module global


def leaky_apply(model, tokenizer, cases, hp, *, handle, cache, state) -> None:
    """Solves again for the case it edited last (restored or not), kept in a module global."""
    remembered = _LAST + [case for case in cases if case not in _LAST]
    _LAST[:] = cases[-1:]
    rank_one.apply(model, tokenizer, remembered, hp, handle=handle, cache=cache, state=state)


def late_save_apply(model, tokenizer, cases, hp, *, handle, cache, state) -> None:
    """Saves the weight on the handle after writing it, so restore brings back the edit."""
    name = architecture_of(model.config).mlp_out.format(hp.layer)
    module = model.get_submodule(name)
    keys, deltas = rank_one.keys_and_values(model, tokenizer, module, cases, hp)
    add_update(module, rank_one.solve(keys, deltas))
    handle.save([f"{name}.weight"])


def unseeded_apply(model, tokenizer, cases, hp, *, handle, cache, state) -> None:
    """Scales its update by a draw from Python's own generator, which pytest-wild does not seed."""
    name = architecture_of(model.config).mlp_out.format(hp.layer)
    module = model.get_submodule(name)
    keys, deltas = rank_one.keys_and_values(model, tokenizer, module, cases, hp)
    handle.save([f"{name}.weight"])
    add_update(module, rank_one.solve(keys, deltas) * random.uniform(0.9, 1.1))


def _broken(name: str, apply) -> Editor:
    return Editor(name, f"broken on purpose: {apply.__doc__}", rank_one.RankOneHparams, rank_one.defaults, apply)


LEAKY = _broken("leaky", leaky_apply)
INEXACT = _broken("inexact", late_save_apply)
NONDETERMINISTIC = _broken("nondeterministic", unseeded_apply)
SINGLE = Editor("single", "the example method, declared to edit one case per update and never in a sequence",
                rank_one.RankOneHparams, rank_one.defaults, rank_one.apply, batches=False, sequences=False)


def failing_defaults(config, profile):
    """Reads a key the model's config does not have."""
    return {"layer": config.to_dict()["no_such_key"]}


BAD_DEFAULTS = Editor("bad-defaults", "broken on purpose: its defaults() raise", rank_one.RankOneHparams, failing_defaults,
                      rank_one.apply)
NO_DEFAULTS = Editor("no-defaults", "broken on purpose: its defaults() return nothing", rank_one.RankOneHparams,
                     lambda config, profile: None, rank_one.apply)
