import pytest

from pytest_wild.cases import WildInputError
from pytest_wild.devices import device_for_worker, parse_devices
from pytest_wild.run import parse_shard


class Options:
    def __init__(self, devices):
        self.devices = devices


def test_devices_parse_to_cuda_names_and_groups():
    assert parse_devices("0,1,2,3") == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert parse_devices("0+1,2+3") == ["cuda:0+cuda:1", "cuda:2+cuda:3"]
    assert parse_devices("cpu") == ["cpu"]
    assert parse_devices(None) is None
    with pytest.raises(WildInputError, match="--wild-devices: 'gpu0'"):
        parse_devices("gpu0")


def test_workers_get_devices_round_robin_and_replacements_land_on_one_too():
    options = Options(parse_devices("0,1,2,3"))
    assert [device_for_worker(f"gw{i}", options) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert device_for_worker("gw5", options) == "cuda:1"
    assert device_for_worker("gw1", Options(parse_devices("0+1,2+3"))) == "cuda:2+cuda:3"


def test_without_a_gpu_every_worker_uses_the_cpu():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert device_for_worker("gw3", Options(None)) == "cpu"


def test_shards_parse():
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard(None) is None
    for bad in ("0/4", "5/4", "a/b", "3"):
        with pytest.raises(WildInputError, match="--wild-shard"):
            parse_shard(bad)
