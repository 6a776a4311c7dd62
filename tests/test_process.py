"""Process settings: torch threads and glibc keeping freed memory (fewer page faults per step)."""

import statistics
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from wycifar.errors import ConfigError
from wycifar.process import configure_process

FAULTS = """
import resource, sys, torch
import torch.nn.functional as F
from wycifar.models import WyCifarNet
from wycifar.process import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.manual_seed(0)
net = WyCifarNet()
optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
def step():
    loss = F.cross_entropy(net(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
for _ in range(3):
    step()
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults_per_step(mode: str) -> list[int]:
    result = subprocess.run([sys.executable, "-c", FAULTS, mode], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return [int(line) for line in result.stdout.split()]


@pytest.mark.slow  # two fresh processes, ~25 s on 2 cores
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_keeping_freed_memory_stops_refaulting_pages_every_step():
    plain, kept = page_faults_per_step("plain"), page_faults_per_step("keep")
    # Training steps of the real network after a warm-up: glibc maps and unmaps the large
    # activations again every step, and each page of them faults; kept, the heap reuses them.
    # Medians, because a step now and then grows the heap or a thread's arena either way.
    assert statistics.median(kept) < statistics.median(plain) / 4, (plain, kept)


def test_threads_must_be_a_positive_whole_number():
    threads = torch.get_num_threads()
    configure_process(1, False)
    assert torch.get_num_threads() == 1
    configure_process(threads, False)
    with pytest.raises(ConfigError, match=r"threads=0 is not allowed; it must be a whole number >= 1"):
        configure_process(0, False)
