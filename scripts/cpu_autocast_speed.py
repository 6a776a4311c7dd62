"""Seconds per training step of the reference network on this CPU: fp32, bf16 and fp16 autocast.

Why it exists: the reference trained under fp16 autocast on a GPU; Lightning turns
trainer.precision=16-mixed into bf16 on a CPU, so this is the only way to see what fp16 itself
would cost here. Usage: OMP_NUM_THREADS=1 python scripts/cpu_autocast_speed.py [steps]
"""

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from wycifar.builders import build_module

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base=None):
    cfg = compose("train", overrides=["experiment=seed"])
net = build_module(cfg).net.train()
images, labels = torch.randn(cfg.data.batch_size, 3, 32, 32), torch.randint(0, 10, (cfg.data.batch_size,))
optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {cfg.data.batch_size}")
for name, dtype in [("fp32", None), ("bf16 autocast", torch.bfloat16), ("fp16 autocast", torch.float16)]:
    times = []
    for _ in range(steps + 1):  # the first step warms up and is not counted
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = F.cross_entropy(net(images).float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    print(f"{name:14s} median {statistics.median(times[1:]):.3f} s per step (min {min(times[1:]):.3f})")
