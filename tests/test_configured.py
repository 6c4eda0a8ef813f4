"""Every network records its constructor arguments one way (``ConfiguredModule``): a config
rebuilds the same network, and the shipped checkpoints, written before, still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xr2ct_lib.checkpoint import load_checkpoint, read_json
from xr2ct_lib.config import PROFILES
from xr2ct_lib.models.classifiers import (
    ClotSegmenter,
    CXRClassifier,
    LatentPEClassifier,
    SliceLSTMClassifier,
    load_classifier,
    save_classifier,
)
from xr2ct_lib.models.compressor3d import Compressor3D
from xr2ct_lib.models.configured import ConfiguredModule
from xr2ct_lib.models.cxr_encoder import ReaderCXREncoder, StandinCXREncoder, load_encoder
from xr2ct_lib.models.denoiser import LatentDenoiser3D

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"

# (a small instance, an input for it)
CASES = {
    "latent": (lambda: LatentPEClassifier(4, init_features=8, growth_rate=4, block_config=(2, 2)),
               lambda: torch.randn(2, 4, 8, 8, 8)),
    "slice_lstm": (lambda: SliceLSTMClassifier(dim=16, hidden=8),
                   lambda: torch.randn(2, 5, 16)),
    "clot_segmenter": (lambda: ClotSegmenter(features=(4, 4, 8, 8, 8, 4), context=1,
                                             crop=(1, 5, 2, 9, 3, 11), size=(8, 16, 16)),
                       lambda: torch.randn(2, 3, 16, 16)),
    "cxr": (lambda: CXRClassifier(width=8, findings=("infarct", "effusion_left")),
            lambda: torch.rand(2, 3, 64, 64)),
    "standin_encoder": (lambda: StandinCXREncoder(embed_dim=32, width=8, in_size=64),
                        lambda: torch.rand(2, 3, 64, 64)),
    "compressor3d": (lambda: Compressor3D(channels=(8, 16), embedding_dim=4, num_embeddings=16),
                     lambda: torch.rand(1, 1, 8, 8, 8) * 2 - 1),
    "denoiser": (lambda: LatentDenoiser3D(4, channels=(8, 16), cond_dim=0, num_classes=None,
                                          attention_head_dim=8),
                 None),
}  # fmt: skip


def _output(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        y = model(x)
    return y[0] if isinstance(y, tuple) else y


@pytest.mark.parametrize("name", [n for n, (_, x) in CASES.items() if x is not None])
def test_config_rebuilds_the_same_network(name):
    make, data = CASES[name]
    torch.manual_seed(0)
    model = make().eval()
    assert isinstance(model, ConfiguredModule)
    hp = model.hparams
    assert json.loads(json.dumps(hp)) == hp  # JSON-ready
    again = type(model).from_config(model.config_dict())
    again.load_state_dict(model.state_dict())
    again.eval()
    assert again.hparams == hp
    x = data()
    assert torch.equal(_output(again, x), _output(model, x))
    # also from the bare hparams (what classifier checkpoints store)
    assert type(model).from_config(hp).hparams == hp


def test_denoiser_config_round_trip():
    model = CASES["denoiser"][0]()
    again = LatentDenoiser3D.from_config(model.config_dict())
    assert again.config_dict() == model.config_dict()
    assert again.config_dict()["_class_name"] == "LatentDenoiser3D"


def test_hparams_is_read_only():
    model = CASES["cxr"][0]()
    with pytest.raises(AttributeError):
        model.hparams = {"width": 1}


def test_numpy_arguments_are_recorded_as_numbers():
    import numpy as np

    model = ClotSegmenter(crop=tuple(np.int64(v) for v in (1, 5, 2, 9, 3, 11)))
    assert model.hparams["crop"] == [1, 5, 2, 9, 3, 11]
    assert all(type(v) is int for v in model.hparams["crop"])


@pytest.mark.parametrize("name", ["latent", "slice_lstm", "clot_segmenter", "cxr"])
def test_saved_classifier_keeps_its_format(tmp_path, name):
    torch.manual_seed(0)
    model = CASES[name][0]().eval()
    save_classifier(model, tmp_path / "c", note="x")
    cfg = read_json(tmp_path / "c" / "config.json")
    assert cfg["hparams"] == model.hparams and cfg["note"] == "x"
    x = CASES[name][1]()
    assert torch.equal(_output(load_classifier(tmp_path / "c"), x), _output(model, x))


@pytest.mark.parametrize(
    ("directory", "cls"),
    [("smoke-cxr-reader", CXRClassifier), ("workshop-cxr-reader", CXRClassifier),
     ("smoke-clot-reader", ClotSegmenter), ("workshop-clot-reader", ClotSegmenter),
     ("smoke-latent-classifier", LatentPEClassifier),
     ("workshop-latent-classifier", LatentPEClassifier)],
)  # fmt: skip
def test_shipped_classifier_checkpoints_load(tmp_path, directory, cls):
    model = load_classifier(WEIGHTS / directory)
    assert type(model) is cls
    tensors, cfg = load_checkpoint(WEIGHTS / directory)
    assert model.hparams == cfg["hparams"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in tensors.items())
    save_classifier(model, tmp_path / "again")  # saving again writes the same hparams
    assert read_json(tmp_path / "again" / "config.json")["hparams"] == cfg["hparams"]


@pytest.mark.parametrize("profile", ["smoke", "workshop"])
def test_shipped_encoders_load(tmp_path, profile):
    directory = WEIGHTS / profile / "encoder"
    model = load_encoder(directory)
    cfg = read_json(directory / "config.json")
    if cfg["kind"] == "reader":  # the X-ray reader's trunk: its classifier's hyperparameters
        assert type(model) is ReaderCXREncoder
        assert model.reader.hparams == cfg["reader"]
    else:
        assert type(model) is StandinCXREncoder
        assert {"kind": "standin", **model.hparams} == cfg
    model.save(tmp_path / "again")
    assert read_json(tmp_path / "again" / "config.json") == cfg
    size = cfg.get("in_size", PROFILES[profile].cxr_size)
    assert model(torch.rand(1, 3, size, size)).shape == (1, cfg["embed_dim"])
