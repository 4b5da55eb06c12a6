"""Which device each process evaluates on: one GPU (or a group of GPUs for a model placed
with accelerate) per xdist worker, round-robin; the CPU when there is no GPU."""

from __future__ import annotations

import re

from ..cases.case import WildInputError

DEVICE = re.compile(r"cpu|auto|mps|cuda(:\d+)?")  # what --wild-device and --wild-devices accept


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


def check_devices(options) -> None:
    """On the controller, before any worker starts: every CUDA device that `--wild-device` or
    `--wild-devices` names must exist, or the run stops with one line (a worker would
    otherwise crash on it, or quietly fall back to the CPU)."""
    named = [("--wild-devices", d) for group in options.devices or [] for d in group.split("+")]
    named += [("--wild-device", d) for d in options.device.split("+")]
    for option, device in named:
        if not DEVICE.fullmatch(device):
            raise WildInputError(f"{option}: {device!r} is not cpu, cuda, cuda:N or auto")
    if not any(device.startswith("cuda") for _, device in named):
        return
    import torch

    count = torch.cuda.device_count()
    for option, device in named:
        if device.startswith("cuda"):
            index = int(device.split(":")[1]) if ":" in device and device.split(":")[1].isdigit() else 0
            if index >= count:
                raise WildInputError(f"{option}: {device} asked for, but this machine shows {count} CUDA device"
                                     f"{'' if count == 1 else 's'}")


def visible_devices(options) -> list[str]:
    if options.devices:
        return options.devices
    import torch

    count = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(count)] if count else ["cpu"]


def device_for_worker(worker_id: str, options) -> str:
    """gw0 -> the first device, gw1 -> the second, ... modulo the number of devices; every
    worker on the one device that `--wild-device` names, when it names one and
    `--wild-devices` is not given."""
    if not options.devices and getattr(options, "device", "auto") != "auto":
        return options.device
    devices = visible_devices(options)
    number = int(worker_id.removeprefix("gw")) if worker_id.removeprefix("gw").isdigit() else 0
    return devices[number % len(devices)]


def header_devices(config, options) -> str:
    workers = config.getoption("numprocesses", None) if xdist_loaded(config) else None
    if isinstance(workers, int) and workers > 0:
        return " ".join(f"gw{i}={device_for_worker(f'gw{i}', options)}" for i in range(workers))
    return options.devices[0] if options.devices else options.device


def xdist_loaded(config) -> bool:
    """Whether xdist is active: installed and loaded by its entry point ("xdist"), or by hand
    with `-p xdist.plugin`, as pytest's documentation says to under PYTEST_DISABLE_PLUGIN_AUTOLOAD."""
    return any(config.pluginmanager.hasplugin(name) for name in ("xdist", "xdist.plugin"))
