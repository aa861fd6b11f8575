#!/usr/bin/env python3
"""Peer for kiln's training benchmark: the same LLaMA model (pre-norm RMSNorm, RoPE, GQA,
SwiGLU, untied head) and optimizer family in PyTorch, trained on random tokens of the same
shape; prints tokens/s and step-latency percentiles as JSON.

stdin: {"config": {...kiln ModelConfig...}, "batch", "seqLen", "steps", "warmup", "device", "compile"}
Muon comes from torch.optim.Muon when this torch has it; otherwise every parameter uses AdamW
and the output says so ("optimizer").
"""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F


class Block(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        d, h, kv, q = c["dModel"], c["heads"], c["kvHeads"], c["headDim"]
        self.h, self.kv, self.q, self.eps = h, kv, q, c["normEps"]
        self.wq = torch.nn.Linear(d, h * q, bias=False)
        self.wk = torch.nn.Linear(d, kv * q, bias=False)
        self.wv = torch.nn.Linear(d, kv * q, bias=False)
        self.wo = torch.nn.Linear(h * q, d, bias=False)
        self.gate_up = torch.nn.Linear(d, 2 * c["ffn"], bias=False)
        self.down = torch.nn.Linear(c["ffn"], d, bias=False)
        self.n1 = torch.nn.Parameter(torch.ones(d))
        self.n2 = torch.nn.Parameter(torch.ones(d))

    def norm(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        y = self.norm(x, self.n1)
        q = self.wq(y).view(B, T, self.h, self.q).transpose(1, 2)
        k = self.wk(y).view(B, T, self.kv, self.q).transpose(1, 2)
        v = self.wv(y).view(B, T, self.kv, self.q).transpose(1, 2)

        def rope(t):
            a, b = t[..., : self.q // 2], t[..., self.q // 2 :]
            return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)

        q, k = rope(q), rope(k)
        rep = self.h // self.kv
        k = k.repeat_interleave(rep, 1)
        v = v.repeat_interleave(rep, 1)
        if hasattr(F, "scaled_dot_product_attention"):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # torch < 2.0 (Debian bookworm's 1.13): the same math, materialized
            s = (q @ k.transpose(-1, -2)) / math.sqrt(self.q)
            s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            o = s.softmax(-1) @ v
        x = x + self.wo(o.transpose(1, 2).reshape(B, T, self.h * self.q))
        g, u = self.gate_up(self.norm(x, self.n2)).chunk(2, -1)
        return x + self.down(F.silu(g) * u)


class Llama(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = torch.nn.Embedding(c["vocabSize"], c["dModel"])
        self.blocks = torch.nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.norm = torch.nn.Parameter(torch.ones(c["dModel"]))
        self.head = torch.nn.Linear(c["dModel"], c["vocabSize"], bias=False)

    def forward(self, ids):
        T = ids.shape[1]
        q = self.c["headDim"]
        inv = self.c["ropeTheta"] ** (-torch.arange(0, q // 2, dtype=torch.float64, device=ids.device) * 2 / q)
        ang = torch.arange(T, dtype=torch.float64, device=ids.device)[:, None] * inv[None]
        cos, sin = ang.cos().float(), ang.sin().float()
        x = self.embed(ids)
        for b in self.blocks:
            x = b(x, cos, sin)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.c["normEps"]) * self.norm
        return self.head(x)


def main():
    spec = json.load(sys.stdin)
    c, B, T = spec["config"], spec["batch"], spec["seqLen"]
    device = torch.device(spec.get("device", "cpu"))
    torch.manual_seed(0)
    model = Llama(c).to(device)
    matrices = [p for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n and "head" not in n]
    others = [p for n, p in model.named_parameters() if not (p.ndim == 2 and "embed" not in n and "head" not in n)]
    if hasattr(torch.optim, "Muon"):
        opts = [torch.optim.Muon(matrices, lr=0.02, momentum=0.95, nesterov=True), torch.optim.AdamW(others, lr=3e-3, betas=(0.9, 0.95))]
        optimizer = "torch.optim.Muon + AdamW"
    else:
        opts = [torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95))]
        optimizer = "AdamW only (this torch has no torch.optim.Muon)"
    step_fn = model
    if spec.get("compile"):
        step_fn = torch.compile(model)
    ids = torch.randint(0, c["vocabSize"], (B, T + 1), device=device)
    times = []
    for i in range(spec["warmup"] + spec["steps"]):
        start = time.perf_counter()
        logits = step_fn(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, c["vocabSize"]).float(), ids[:, 1:].reshape(-1))
        loss.backward()
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= spec["warmup"]:
            times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    p50 = times[len(times) // 2]
    json.dump({"torch": torch.__version__, "threads": torch.get_num_threads(), "optimizer": optimizer,
               "p50Ms": p50, "p99Ms": times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)],
               "tokensPerSecond": B * T / (p50 / 1e3), "loss": float(loss)}, sys.stdout)


if __name__ == "__main__":
    main()
