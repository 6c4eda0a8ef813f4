"""Fixtures shared by the test files."""

from __future__ import annotations

import pytest
from tiny_run import chapters_1_to_3

from xr2ct_lib.generation.pipeline import XRay2CTPAPipeline


@pytest.fixture
def loads(monkeypatch) -> list:
    """Records every bundle load (a refusal or a bad input must stop before any)."""
    calls, real = [], XRay2CTPAPipeline.from_pretrained.__func__

    def record(cls, *a, **k):
        calls.append(a)
        return real(cls, *a, **k)

    monkeypatch.setattr(XRay2CTPAPipeline, "from_pretrained", classmethod(record))
    return calls


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run, built once per test file: 12 patients' prepared tensors, VAE, latents,
    encoder and embeddings, as chapters 1–3 make them."""
    return chapters_1_to_3(tmp_path_factory.mktemp("run"))
