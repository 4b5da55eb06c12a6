"""Editor hyperparameters: per-architecture defaults, overridden by the suite, then by a
YAML file (`--wild-hparams`), with EasyEdit's key names accepted where they mean the same."""

from __future__ import annotations

import dataclasses
import types
import typing
import math
import string
from collections.abc import Collection, Mapping

from ..cases.case import WildInputError
from ..model.architectures import ModelShape

# Keys found in EasyEdit hyperparameter files that select things pytest-wild decides by
# other means (the model, the device, the module names of the architecture).
EASYEDIT_IGNORED = frozenset({
    "alg_name", "model_name", "device", "model_parallel", "fp16", "stats_dir", "max_length",
    "layer_module_tmp", "mlp_module_tmp", "attn_module_tmp", "ln_f_module", "lm_head_module",
    "results_dir", "use_chat_template", "batch_size_eval",
    "P_loc",  # AlphaEdit's projection file: projections are cached in memory per model and layer
})


# Bounds that hold for every editor, by EasyEdit key name: (lowest value, whether it is excluded).
# A value outside them is refused before the first edit rather than silently giving a no-op
# (zero steps), a diverging search (a negative KL factor) or a crash deep in an editor.
BOUNDS = {
    "lr": (0.0, True), "v_lr": (0.0, True), "clamp_norm_factor": (0.0, True),
    "num_steps": (0, False), "v_num_grad_steps": (0, False), "batch_size": (1, False),
    "weight_decay": (0.0, False), "v_weight_decay": (0.0, False), "kl_factor": (0.0, False),
    "mom2_update_weight": (0.0, False), "mom2_n_samples": (1, False), "L2": (0.0, False),
    "nullspace_threshold": (0.0, False),
    "eps": (0.0, True), "edit_lr": (0.0, True), "n_iter": (1, False),  # GRACE's radius, WISE's steps
    "rank": (1, False), "lora_alpha": (0.0, True), "lora_dropout": (0.0, False),  # LoRA's adapter
    "k": (0, False),  # IKE's demonstrations
    "batch_size_once": (1, False),  # UltraEdit's cases per pass
}
# Upper bounds, the same way: (highest value, whether it is excluded).
UPPER = {"lora_dropout": (1.0, True)}
DEFAULTS_ORIGIN = "the editor's defaults"


def build_hparams(hparams_type: type, defaults: Mapping, layers: list[tuple[str, Mapping]],
                  shape: ModelShape | None = None, ignored: Collection[str] = ()) -> object:
    """Merge `defaults` with each (origin, overrides) layer in order and build the dataclass;
    with `shape`, also check layers and module names against the model. Keys in `ignored`
    (the editor's published keys it does not use, see `ignored_keys`) are skipped.

    `origin` names the file and section in errors, e.g. "suites/x.yaml: hparams.ft-m".
    """
    fields = {f.name: f for f in dataclasses.fields(hparams_type)}
    hints = typing.get_type_hints(hparams_type)
    merged = dict(defaults)
    origin_of = dict.fromkeys(merged, DEFAULTS_ORIGIN)
    for origin, overrides in layers:
        for key, value in overrides.items():
            if key in EASYEDIT_IGNORED or key in ignored:
                continue
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise WildInputError(f"{origin}: unknown hyperparameter {key!r} (known: {known})")
            merged[key] = _coerce(value, hints[key], f"{origin}: {key}")
            origin_of[key] = origin
    missing = [name for name, f in fields.items() if name not in merged
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise WildInputError(f"hyperparameters: no value for {', '.join(missing)}")
    hparams = hparams_type(**merged)
    for key, value in dataclasses.asdict(hparams).items():
        _check_bounds(key, value, origin_of.get(key, DEFAULTS_ORIGIN))
    if shape is not None:
        _check_fit(hparams, origin_of, shape)
    return hparams


def ignored_keys(layers: list[tuple[str, Mapping]], ignored: Mapping[str, str]) -> list[str]:
    """One line per key a layer sets that the editor accepts and does not use, e.g.
    "ft.yaml: kl_factor ignored (...)", so the user learns it once instead of getting an error."""
    return [f"{origin}: {key} ignored ({ignored[key]})" for origin, overrides in layers
            for key in overrides if key in ignored]


def _check_bounds(key: str, value, origin: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise WildInputError(f"{origin}: {key}: expected a finite number, got {value!r}")
    if key not in BOUNDS or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    lowest, excluded = BOUNDS[key]
    if value < lowest or (excluded and value == lowest):
        raise WildInputError(f"{origin}: {key}: expected a number {'>' if excluded else '>='} {lowest}, got {value!r}")
    highest, excluded = UPPER.get(key, (math.inf, False))
    if value > highest or (excluded and value == highest):
        raise WildInputError(f"{origin}: {key}: expected a number {'<' if excluded else '<='} {highest}, got {value!r}")


def _check_fit(hparams: object, origin_of: dict[str, str], shape: ModelShape) -> None:
    """Every layer index inside the model, every module template naming a module of it."""
    values = dataclasses.asdict(hparams)
    model = f"the model ({shape.model_type}, {shape.num_layers} layers)"
    layers = values.get("layers", [])
    if "layers" in values and not layers and not getattr(hparams, "layers_may_be_empty", False):
        raise WildInputError(f"{origin_of.get('layers', DEFAULTS_ORIGIN)}: layers: name at least one layer to edit")
    for key in ("layers", "v_loss_layer"):
        for layer in (values[key] if isinstance(values.get(key), list) else [values.get(key)]):
            if layer is not None and not 0 <= layer < shape.num_layers:
                raise WildInputError(f"{origin_of.get(key, DEFAULTS_ORIGIN)}: {key}: layer {layer} is not in "
                                     f"{model}: use 0 to {shape.num_layers - 1}")
    if "inner_params" in values:
        _check_inner_params(values["inner_params"], origin_of.get("inner_params", DEFAULTS_ORIGIN), shape, model)
    if isinstance(values.get("target_modules"), list):  # peft's names: the last part of a module's path
        present = {name.rpartition(".")[2] for name in shape.module_names}
        if not values["target_modules"]:
            raise WildInputError(f"{origin_of.get('target_modules', DEFAULTS_ORIGIN)}: target_modules: name at least "
                                 "one module to adapt")
        for name in values["target_modules"]:
            if name not in present:
                raise WildInputError(f"{origin_of.get('target_modules', DEFAULTS_ORIGIN)}: target_modules: {name!r} "
                                     f"names no module of {model}")
    for key, template in values.items():
        if not (key.endswith("_tmp") and isinstance(template, str)):
            continue
        if not _one_index_field(template):
            raise WildInputError(f"{origin_of.get(key, DEFAULTS_ORIGIN)}: {key}: {template!r} must be a module name "
                                 "with one {} where the layer number goes")
        for layer in layers or [0]:
            name = template.format(layer)
            if name not in shape.module_names and name not in shape.parameters:
                raise WildInputError(f"{origin_of.get(key, DEFAULTS_ORIGIN)}: {key}: {template!r} names "
                                     f"{name!r}, which is not a module of {model}")


def _check_inner_params(names, origin: str, shape: ModelShape, model: str) -> None:
    """Modules named one by one (UltraEdit's published files): each a linear layer of the model."""
    if not names:
        raise WildInputError(f"{origin}: inner_params: name at least one module to edit")
    for name in names:
        weight = f"{name.removesuffix('.weight')}.weight"
        if len(shape.parameters.get(weight, ())) != 2:
            raise WildInputError(f"{origin}: inner_params: {name!r} is not a linear layer of {model} "
                                 "(a module with a 2-D weight)")


def _one_index_field(template: str) -> bool:
    """The template has exactly one plain `{}` (or `{0}`) field: no other field, attribute,
    index, conversion or format spec for `str.format` to follow, and no stray brace."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError:
        return False
    return len(fields) == 1 and fields[0] in (("", "", None), ("0", "", None))


def _coerce(value, hint, where: str):
    """Check a YAML value against a dataclass field's type; ints are accepted as floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where)
            except WildInputError:
                continue
        raise WildInputError(f"{where}: {value!r} is not a valid value ({_describe(hint)})")
    if hint is type(None):
        if value is None:
            return None
        raise WildInputError(f"{where}: expected null")
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise WildInputError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, where) for v in value]
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise WildInputError(f"{where}: {value!r} is not one of {list(typing.get_args(hint))}")
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, str, bool) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise WildInputError(f"{where}: expected {_describe(hint)}, got {value!r}")


def _describe(hint) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def as_dict(hparams: object) -> dict:
    return dataclasses.asdict(hparams)
