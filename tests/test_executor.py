import builtins

import numpy as np
import pytest
import torch

from genlab.errors import ConfigError
from genlab.executor import RayUnavailable, map_tasks


def matmul_task(seed: int) -> tuple[int, np.ndarray]:
    """A task whose result depends on the thread count only through float rounding."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(64, 300, generator=g), torch.randn(300, 8, generator=g)
    return torch.get_num_threads(), (a @ b).numpy()


def test_local_results_in_task_order_and_on_done_for_each():
    seen = []
    out = map_tasks(matmul_task, [3, 1, 2], on_done=lambda t, r: seen.append(t), threads=1)
    assert sorted(seen) == [1, 2, 3] and [r[0] for r in out] == [1, 1, 1]
    np.testing.assert_array_equal(out[1][1], matmul_task(1)[1])


def test_process_pool_equals_local_bit_for_bit():
    local = map_tasks(matmul_task, [0, 1, 2, 3], executor="local")
    pooled = map_tasks(matmul_task, [0, 1, 2, 3], executor="process", workers=2)
    for (t_local, a), (t_pool, b) in zip(local, pooled):
        assert t_local == t_pool == 1  # every task sees the requested thread count
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def local_ray():
    """A Ray instance on this machine only, started by the test and shut down after it."""
    import ray  # a dev dependency, installed by `make test`: its absence fails here

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_equals_local_bit_for_bit(local_ray):
    local = map_tasks(matmul_task, list(range(6)), executor="local")
    seen = []
    on_ray = map_tasks(
        matmul_task, list(range(6)), executor="ray", on_done=lambda t, r: seen.append(t)
    )
    assert sorted(seen) == list(range(6))
    for (t_local, a), (t_ray, b) in zip(local, on_ray):
        assert t_local == t_ray == 1
        np.testing.assert_array_equal(a, b)


def test_attention_grid_on_ray_equals_local(local_ray):
    from genlab.studies.attention.grid import METRICS, run_grid

    tiny = dict(steps=30, lr=0.3, n_values=(6,), n_test=30, T=4, seeds=(2,), eta=0.34)
    local = run_grid([2.0, 6.0], [16, 24], executor="local", **tiny)
    on_ray = run_grid([2.0, 6.0], [16, 24], executor="ray", **tiny)
    for k in METRICS:
        np.testing.assert_array_equal(local.metrics[k], on_ray.metrics[k])


def test_ray_missing_and_unknown_executor(monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(RayUnavailable, match="pip install ray"):
        map_tasks(matmul_task, [0], executor="ray")
    with pytest.raises(ConfigError, match="executor"):
        map_tasks(matmul_task, [0], executor="threads")
