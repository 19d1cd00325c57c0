"""ddnb keeps freed memory in the heap on glibc, unless told not to."""

import platform
import subprocess
import sys

import pytest

from ddnb.memory import keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_applied_on_glibc_and_switched_off_by_the_variable(monkeypatch):
    assert keep_freed_memory()
    monkeypatch.setenv("DDNB_KEEP_FREED_MEMORY", "0")
    assert not keep_freed_memory()


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_training_steps_reuse_freed_activations_instead_of_faulting_them_in_again():
    """Steps of a conv net on a large batch (67 MB activations): with glibc's default every step maps its
    activations afresh and the kernel faults them in; after ``import ddnb`` they come from the heap."""
    script = """
import resource, sys, torch
if sys.argv[1] == "1":
    import ddnb
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, padding=1))
images = torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(0))
def step():
    net(images).square().mean().backward()
step(); step()  # warm: the heap grows to its working size
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {flag: int(subprocess.run([sys.executable, "-c", script, flag], check=True, capture_output=True, text=True).stdout)
              for flag in ("0", "1")}
    assert faults["0"] > 10 * faults["1"], faults
