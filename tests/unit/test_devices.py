import pytest

from pytest_wild.cases.case import WildInputError
from pytest_wild.model.devices import device_for_worker, parse_devices
from pytest_wild.run.options import parse_shard


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


def test_cpu_threads_follow_model_size_and_the_cores_a_worker_may_use(monkeypatch):
    import os

    import torch

    from pytest_wild.model.load import choose_cpu_threads

    saved = torch.get_num_threads()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(name, raising=False)
    cores = len(os.sched_getaffinity(0))
    try:
        assert choose_cpu_threads(torch.nn.Linear(1000, 1000), "cpu") == 1  # 1M parameters: one thread
        large = torch.nn.Linear(20_000, 20_000, device="meta")  # 400M parameters
        assert choose_cpu_threads(large, "cpu") == min(cores, 16) == torch.get_num_threads()
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(cores))
        assert choose_cpu_threads(large, "cpu") == 1
        assert choose_cpu_threads(large, "cuda:0") is None
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert choose_cpu_threads(large, "cpu") is None  # the user's setting stands
    finally:
        torch.set_num_threads(saved)


@pytest.mark.skipif("__import__('torch').cuda.is_available()", reason="checks the answer on a machine without a GPU")
@pytest.mark.parametrize(("args", "message"), [
    (["--wild-devices", "0", "-n", "2"], "ERROR: --wild-devices: cuda:0 asked for, but this machine shows 0 CUDA devices"),
    (["--wild-device", "cuda", "-n", "2"], "ERROR: --wild-device: cuda asked for, but this machine shows 0 CUDA devices"),
    (["--wild-device", "cuda"], "ERROR: --wild-device: cuda asked for, but this machine shows 0 CUDA devices"),
])
def test_a_missing_gpu_stops_the_run_with_one_line_serially_and_under_xdist(pytester, args, message):
    result = pytester.runpytest_subprocess("--wild", "--editor=ft-m", "--wild-limit=2", "-p", "no:cacheprovider", *args)
    assert result.ret == 4
    result.stderr.fnmatch_lines([message])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_workers_share_the_one_device_wild_device_names():
    class Named:
        devices = None
        device = "cuda:1"

    assert device_for_worker("gw0", Named()) == device_for_worker("gw3", Named()) == "cuda:1"
