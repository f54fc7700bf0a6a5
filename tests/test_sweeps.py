"""refnet.sweeps.run_grid: the same results serially, on a process pool and on a dask cluster,
in grid order, with a deterministic seed per run."""
import functools
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

import refnet
from refnet.cutoff import top_exponent
from refnet.sweeps import SweepResult, run_grid, run_seeds

# a small sweep of real runs: the top Lyapunov exponent of uniform random products (QR
# method; the estimate depends on the seed) over widths and scales, and random networks
EXPONENT = functools.partial(top_exponent, law="uniform", steps=400)
AXES = {"N": [3, 5], "scale": [1.0, 1.5, 2.0]}
NETS = [{"widths": [2, 4, 1], "activation": "tanh"}, {"widths": [3, 5, 2], "activation": "relu"},
        {"widths": [1, 3, 1], "activation": "gelu"}]


def _check_exponents(res: SweepResult):
    assert isinstance(res, SweepResult) and len(res) == 6
    assert res.grid == tuple({"N": n, "scale": s} for n in (3, 5) for s in (1.0, 1.5, 2.0))
    assert res.seeds == run_seeds(7, 6)
    for kw, s, r in zip(res.grid, res.seeds, res.results):   # run i got seed i, in grid order
        assert r == EXPONENT(**kw, seed=s)
    assert all(t >= 0 for t in res.seconds)


def test_serial_grid_is_the_product_with_a_seed_per_run():
    res = run_grid(EXPONENT, AXES, seed=7)
    _check_exponents(res)
    assert len(set(r[0] for r in res.results)) == 6            # the seeds differ per run
    again = run_grid(EXPONENT, [dict(kw) for kw in res.grid], seed=7)    # list form
    assert again.results == res.results and again.seeds == res.seeds


def test_process_pool_gives_the_serial_results():
    serial = run_grid(EXPONENT, AXES, seed=7)
    with ProcessPoolExecutor(2) as pool:
        pooled = run_grid(EXPONENT, AXES, seed=7, executor=pool)
        nets = run_grid(refnet.MLP.init, NETS, seed=3, executor=pool)
    _check_exponents(pooled)
    assert pooled.results == serial.results and pooled.grid == serial.grid
    assert list(nets) == list(run_grid(refnet.MLP.init, NETS, seed=3))
    assert nets[1] == refnet.MLP.init([3, 5, 2], "relu", seed=run_seeds(3, 3)[1])


def test_dask_local_cluster_gives_the_serial_results():
    """A real dask.distributed cluster (two worker processes) through client.get_executor()."""
    distributed = pytest.importorskip("dask.distributed")
    serial = run_grid(EXPONENT, AXES, seed=7)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        res = run_grid(EXPONENT, AXES, seed=7, executor=client.get_executor())
        nets = run_grid(refnet.MLP.init, NETS, seed=3, executor=client.get_executor())
    _check_exponents(res)
    assert res.results == serial.results
    assert list(nets) == list(run_grid(refnet.MLP.init, NETS, seed=3))


def _slow_first(i, seed):
    time.sleep(0.05 * (3 - i))          # run 0 finishes last
    return i, seed


def test_results_in_grid_order_whatever_finishes_first():
    finished = []
    with ThreadPoolExecutor(3) as pool:
        res = run_grid(_slow_first, [{"i": 0}, {"i": 1}, {"i": 2}], seed=0, executor=pool,
                       progress=lambda i, r: finished.append(i))
    assert [r[0] for r in res] == [0, 1, 2] and finished == [2, 1, 0]
    assert [r[1] for r in res] == list(res.seeds) == list(run_seeds(0, 3))


def test_seeds_are_deterministic_distinct_and_independent_of_the_executor():
    s = run_seeds(0, 1000)
    assert s == run_seeds(0, 1000) and len(set(s)) == 1000
    assert all(isinstance(v, int) and 0 <= v < 2 ** 63 for v in s)
    assert run_seeds(0, 5) == s[:5] and run_seeds(1, 5) != s[:5]
    ss = np.random.SeedSequence(0)
    assert run_seeds(ss, 5) == run_seeds(ss, 5) == s[:5]       # ss itself is not advanced
    for bad, err, msg in ((-1, ValueError, "non-negative"), (True, TypeError, "bool"),
                          (1.5, TypeError, "float"), (None, TypeError, "NoneType")):
        with pytest.raises(err, match=f"seed: .*{msg}"):
            run_grid(EXPONENT, AXES, seed=bad)


def test_a_lambda_on_a_process_pool_is_a_clear_type_error():
    with ProcessPoolExecutor(1) as pool:
        with pytest.raises(TypeError, match=r"fn: .*picklable.*module-level.*<lambda>"):
            run_grid(lambda N, seed: N, [{"N": 1}], seed=0, executor=pool)
        with pytest.raises(TypeError, match=r"grid\[1\]: .*pickle"):
            run_grid(EXPONENT, [{"N": 3}, {"N": threading.Lock()}], seed=0, executor=pool)
    # without pickling (serially, threads) a lambda is fine
    assert run_grid(lambda N, seed: N, [{"N": 1}, {"N": 2}], seed=0).results == (1, 2)


def test_bad_grids_and_arguments_are_named():
    cases = [(dict(fn=EXPONENT, grid=[{"N": 3}, 4], seed=0), TypeError, r"grid\[1\]: .*dict"),
             (dict(fn=EXPONENT, grid="N", seed=0), TypeError, "grid: .*str"),
             (dict(fn=EXPONENT, grid={"N": 3}, seed=0), TypeError, "grid: .*sequences"),
             (dict(fn=EXPONENT, grid=[{"N": 3, "seed": 1}], seed=0), ValueError,
              r"grid\[0\]: has its own 'seed'"),
             (dict(fn=3, grid=[{}], seed=0), TypeError, "fn: expected a callable"),
             (dict(fn=EXPONENT, grid=[{}], seed=0, executor="pool"), TypeError,
              "executor: .*Executor.*str")]
    for kw, err, msg in cases:
        with pytest.raises(err, match=msg):
            run_grid(**kw)
    assert run_grid(EXPONENT, [{"N": 3, "seed": 5}], seed=0, seed_arg=None)[0] == \
        EXPONENT(N=3, seed=5)
    assert run_grid(EXPONENT, [], seed=0) == SweepResult((), (), (), ())


def test_a_failing_run_reraises_naming_the_run():
    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(ValueError, match="N: ") as e:
            run_grid(EXPONENT, [{"N": 3}, {"N": -1}], seed=0, executor=pool)
    assert any("run 1 with {'N': -1" in n for n in getattr(e.value, "__notes__", []))
    with ProcessPoolExecutor(1) as pool:       # the worker's exception, unchanged in type
        with pytest.raises(ValueError, match="N: "):
            run_grid(EXPONENT, [{"N": -1}], seed=0, executor=pool)
