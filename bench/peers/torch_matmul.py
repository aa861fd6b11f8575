#!/usr/bin/env python3
"""Peer for kiln's CUDA GEMM: torch.matmul (cuBLAS) bf16 on the same shapes and layouts, timed
with CUDA events, an L2 flush before each repeat, and medians (METHOD.md).

stdin: JSON list of {"name", "M", "N", "K", "transA", "transB", "dtype"}; stdout: JSON.
"""
import json
import sys

import torch


def main() -> None:
    cases = json.load(sys.stdin)
    dev = torch.device("cuda")
    l2 = torch.cuda.get_device_properties(dev).L2_cache_size
    flush = torch.empty(max(2 * l2, 128 << 20) // 4, dtype=torch.float32, device=dev)
    out = []
    for case in cases:
        m, n, k = case["M"], case["N"], case["K"]
        dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[case.get("dtype", "bf16")]
        a = torch.randn((k, m) if case["transA"] else (m, k), device=dev, dtype=dtype)
        b = torch.randn((n, k) if case["transB"] else (k, n), device=dev, dtype=dtype)
        op_a = a.t() if case["transA"] else a
        op_b = b.t() if case["transB"] else b
        for _ in range(3):
            torch.matmul(op_a, op_b)
        times = []
        for _ in range(case.get("repeats", 20)):
            flush.zero_()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            torch.matmul(op_a, op_b)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        times.sort()
        out.append({"name": case["name"], "medianMs": times[len(times) // 2]})
    json.dump({"torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(dev), "results": out}, sys.stdout)


if __name__ == "__main__":
    main()
