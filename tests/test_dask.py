"""Beyond one machine (issue 14): a generated file scores partitions on a Dask cluster (docs/distributed.md).

The file is shipped to the workers with `Client.upload_file`, each worker imports it and runs `predict` on
its partitions; the results equal a single-process run over the same partitions. A LocalCluster with
worker *processes* is a real cluster in all that matters here: nothing is shared with the test process.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES, assert_close, import_file

import konverter

da = pytest.importorskip("dask.array", reason="dask is not installed (pip install 'dask[distributed]')")
distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")

MODEL = FIXTURES / "core" / "phone__k3keras.keras"  # 103 features -> 1 score
ROWS, ROWS_PER_PARTITION = 10_000, 1_250


def test_a_generated_file_scores_partitions_on_a_dask_cluster(tmp_path):
    generated = konverter.konvert(MODEL, tmp_path / "phone_scorer.py")
    rows = np.random.default_rng(0).standard_normal((ROWS, 103)).astype(np.float32)

    def score(partition: np.ndarray) -> np.ndarray:
        import phone_scorer  # the shipped file, imported on the worker (NumPy only: no TensorFlow there)

        return phone_scorer.predict(partition)

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    with cluster, distributed.Client(cluster) as client:
        client.upload_file(str(generated))
        data = da.from_array(rows, chunks=(ROWS_PER_PARTITION, 103))
        scores = data.map_blocks(score, dtype=np.float32, chunks=(ROWS_PER_PARTITION, 1))
        distributed_result = scores.compute()
        workers = client.run(lambda: __import__("os").getpid())
    assert len(workers) == 2

    single = import_file(generated)
    per_partition = np.concatenate(
        [single.predict(rows[i : i + ROWS_PER_PARTITION]) for i in range(0, ROWS, ROWS_PER_PARTITION)]
    )
    assert distributed_result.shape == (ROWS, 1) and distributed_result.dtype == np.float32
    assert np.array_equal(distributed_result, per_partition)  # the same numbers, bit for bit
    assert_close(distributed_result, single.predict(rows), "partitioned vs one batch")
