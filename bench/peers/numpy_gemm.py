#!/usr/bin/env python3
"""Peer for kiln's CPU GEMM: numpy (OpenBLAS) f32 matmul on the same shapes, same machine.

stdin: JSON list of {"name", "M", "N", "K", "transA", "transB"}; stdout: JSON list with the
median milliseconds of `repeats` runs after a warm-up. Thread count comes from the environment
(OPENBLAS_NUM_THREADS), which the caller sets to kiln's.
"""
import json
import sys
import time

import numpy as np


def main() -> None:
    cases = json.load(sys.stdin)
    rng = np.random.default_rng(0)
    out = []
    for case in cases:
        m, n, k = case["M"], case["N"], case["K"]
        a = rng.standard_normal((k, m) if case["transA"] else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if case["transB"] else (k, n), dtype=np.float32)
        op_a = a.T if case["transA"] else a
        op_b = b.T if case["transB"] else b
        c = np.empty((m, n), dtype=np.float32)
        np.matmul(op_a, op_b, out=c)  # warm-up
        times = []
        for _ in range(case.get("repeats", 7)):
            start = time.perf_counter()
            np.matmul(op_a, op_b, out=c)
            times.append((time.perf_counter() - start) * 1e3)
        times.sort()
        out.append({"name": case["name"], "medianMs": times[len(times) // 2]})
    try:
        from threadpoolctl import threadpool_info  # optional: which BLAS ran

        blas = [{"api": i.get("internal_api"), "version": i.get("version"), "threads": i.get("num_threads")} for i in threadpool_info()]
    except Exception:  # noqa: BLE001
        blas = np.__config__.show(mode="dicts").get("Build Dependencies", {}).get("blas", {}) if hasattr(np.__config__, "show") else {}
    json.dump({"numpy": np.__version__, "blas": blas, "results": out}, sys.stdout)


if __name__ == "__main__":
    main()
