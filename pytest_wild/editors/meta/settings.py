"""MEND's training settings, the published ones as defaults (read by the command line
without importing torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ...cases.case import WildInputError


@dataclass
class TrainSettings:
    """The published MEND settings (Mitchell et al. 2022, its zsRE configuration) as defaults."""

    blocks: int = 3  # the MLP weights of the model's last `blocks` blocks are edited
    rank: int = 1920
    hidden: int = 2  # residual layers: EasyEdit's n_hidden: 1 builds two (IDMLP: n_hidden + 1)
    edit_lr: float = 1e-4
    lr: float = 1e-6
    lr_lr: float = 1e-4
    c_edit: float = 0.1
    c_loc: float = 1.0
    batch_size: int = 1
    accumulate: int = 10
    grad_clip: float = 100.0
    steps: int = 100_000
    val_every: int = 1000
    val_cases: int = 500
    patience: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not math.isfinite(value):  # argparse's float() takes "nan" and "inf": training would fail steps later
                raise WildInputError(f"{option(item.name)}: {value} must be a finite number")
            if value < 0 or (value == 0 and item.name not in ("seed", "c_edit", "c_loc")):
                raise WildInputError(f"{option(item.name)}: {value} must be positive")
        for name in ("steps", "val_every"):
            if getattr(self, name) % self.accumulate:
                raise WildInputError(f"{option(name)}: {getattr(self, name)} is not a multiple of "
                                     f"--accumulate {self.accumulate} (checkpoints fall between optimiser steps)")


def option(name: str) -> str:
    return "--" + name.replace("_", "-")
