"""Which device each process evaluates on: one GPU (or a group of GPUs for a model placed
with accelerate) per xdist worker, round-robin; the CPU when there is no GPU."""

from __future__ import annotations

from .cases import WildInputError


def parse_devices(text: str | None) -> list[str] | None:
    """'0,1,2,3' -> ['cuda:0', ...]; '0+1,2+3' -> ['cuda:0+cuda:1', 'cuda:2+cuda:3']; 'cpu' allowed."""
    if text is None:
        return None
    groups = []
    for group in text.split(","):
        members = []
        for part in group.split("+"):
            part = part.strip()
            if part == "cpu" or part.startswith("cuda"):
                members.append(part)
            elif part.isdigit():
                members.append(f"cuda:{part}")
            else:
                raise WildInputError(f"--wild-devices: {text!r}: use GPU numbers like 0,1 or groups like 0+1,2+3")
        groups.append("+".join(members))
    return groups


def visible_devices(options) -> list[str]:
    if options.devices:
        return options.devices
    import torch

    count = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(count)] if count else ["cpu"]


def device_for_worker(worker_id: str, options) -> str:
    """gw0 -> the first device, gw1 -> the second, ... modulo the number of devices."""
    devices = visible_devices(options)
    number = int(worker_id.removeprefix("gw")) if worker_id.removeprefix("gw").isdigit() else 0
    return devices[number % len(devices)]


def header_devices(config, options) -> str:
    workers = config.getoption("numprocesses", None) if config.pluginmanager.hasplugin("xdist") else None
    if isinstance(workers, int) and workers > 0:
        return " ".join(f"gw{i}={device_for_worker(f'gw{i}', options)}" for i in range(workers))
    return options.devices[0] if options.devices else options.device
