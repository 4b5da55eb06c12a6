"""Gates and thresholds: "reliability>=0.5", "synthetic.reliability>=0.9". A gate decides
the session's exit status from the aggregates; a threshold decides each case's test."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from ..cases.case import WildInputError
from ..scores.metrics import REPORTED_METRICS

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
_RULE = re.compile(r"^\s*(?:([a-z_-]+)\.)?([a-z_][a-z0-9_]*)\s*(>=|<=|==|>|<)\s*([0-9]*\.?[0-9]+)\s*$")


@dataclass(frozen=True)
class Rule:
    mode: str | None  # None: the run's primary mode
    metric: str
    op: str
    value: float
    text: str

    def holds(self, observed: float) -> bool:
        return _OPS[self.op](observed, self.value)


def parse_rule(text: str, option: str, modes: tuple[str, ...]) -> Rule:
    match = _RULE.match(text)
    if not match:
        raise WildInputError(f"{option}: cannot read {text!r}; write e.g. \"reliability>=0.5\" or \"synthetic.locality>0.9\"")
    mode, metric, op, value = match.groups()
    if metric not in REPORTED_METRICS:
        raise WildInputError(f"{option}: {text!r}: unknown metric {metric!r} (known: {', '.join(REPORTED_METRICS)})")
    if mode is not None and mode not in modes:
        raise WildInputError(f"{option}: {text!r}: mode {mode!r} is not evaluated in this run (--wild-eval gives {', '.join(modes)})")
    return Rule(mode, metric, op, float(value), text.strip())
