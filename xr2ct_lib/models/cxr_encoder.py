"""The CXR encoder: one 512-d embedding per chest X-ray, the condition of the diffusion model.

Two implementations of one interface (``embed(x) -> (B, 512)`` for ``x`` (B, 3, S, S) in
[0, 1]):

- :class:`OpenCLIPImageEncoder`: BiomedCLIP's image tower through ``open_clip`` (the
  paper's encoder), loaded from local files only: a folder in open_clip's ``local-dir``
  layout or a repo id already in the Hugging Face cache (``HF_HUB_OFFLINE=1``);
- :class:`StandinCXREncoder`: a small CNN that the ``smoke``/``workshop`` profiles train
  inside the book (:mod:`xr2ct_lib.train.encoder`) contrastively on the cohort's 80 training
  patients;
- :class:`ReaderCXREncoder`: the trunk and finding outputs of the pretrained X-ray reader
  (:mod:`xr2ct_lib.train.readers.cxr`, thousands of simulated radiographs outside the cohort),
  frozen: the book's analogue of a foundation encoder that saw far more images than any cohort.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from torch import nn

from xr2ct_lib.checkpoint import load_checkpoint, save_checkpoint
from xr2ct_lib.files import atomic_write_text
from xr2ct_lib.models.configured import ConfiguredModule

BIOMEDCLIP = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"


class StandinCXREncoder(ConfiguredModule):
    """Five strided conv blocks, global pooling and a linear map to an L2-normalised embedding."""

    @register_to_config
    def __init__(self, embed_dim: int = 512, width: int = 16, in_size: int = 128) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 8 * width, 8 * width]
        layers = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GroupNorm(4, b), nn.SiLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1] * 4, embed_dim)

    def describe(self) -> str:
        return "in-book stand-in CXR encoder (small CNN, trained here contrastively)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected X-rays (B, 3, S, S), got {tuple(x.shape)}")
        f = F.adaptive_avg_pool2d(self.features(x * 2 - 1), 2).flatten(1)
        return F.normalize(self.head(f), dim=-1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def save(self, directory: str | Path) -> Path:
        return save_checkpoint(directory, self.state_dict(), {"kind": "standin", **self.hparams})


class ReaderCXREncoder(nn.Module):
    """The pretrained X-ray reader as a frozen encoder: its pooled trunk features (unit norm)
    and the probability of each of its outputs (PE and the findings a radiograph shows),
    zero-padded to ``embed_dim``. The reader learnt the findings from the simulation's
    records on patients outside the cohort, so the embedding carries them by construction.
    """

    def __init__(self, reader: nn.Module, embed_dim: int = 512, source: str = "") -> None:
        super().__init__()
        self.reader = reader.eval().requires_grad_(False)
        self.embed_dim = int(embed_dim)
        self.source = str(source)
        width = reader.head[-1].in_features + reader.head[-1].out_features
        if width > self.embed_dim:
            raise ValueError(f"the reader's {width} features do not fit embed_dim {embed_dim}")

    def describe(self) -> str:
        return (f"pretrained X-ray reader's trunk and finding outputs {self.source} (frozen; "
                f"in-book stand-in for BiomedCLIP)")  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected X-rays (B, 3, S, S), got {tuple(x.shape)}")
        f = self.reader.features(x * 2 - 1)
        p = torch.sigmoid(self.reader.head[-1](f))
        e = torch.cat([F.normalize(f, dim=-1), p], dim=-1)
        return F.pad(e, (0, self.embed_dim - e.shape[-1]))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def save(self, directory: str | Path) -> Path:
        return save_checkpoint(directory, self.reader.state_dict(),
                               {"kind": "reader", "embed_dim": self.embed_dim,
                                "source": self.source, "reader": self.reader.hparams})  # fmt: skip


class OpenCLIPImageEncoder(nn.Module):
    """The image tower of an open_clip model (BiomedCLIP in the paper), frozen.

    Inputs in [0, 1] are resized to the model's image size and normalised with its mean/std.
    """

    def __init__(self, model: nn.Module, source: str) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.source = source
        visual = model.visual
        size = getattr(visual, "image_size", 224)
        self.image_size = tuple(size) if isinstance(size, list | tuple) else (size, size)
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        mean = cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))
        std = cfg.get("std", (0.26862954, 0.26130258, 0.27577711))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_local(
        cls, name: str | Path = BIOMEDCLIP, allow_download: bool | None = None, named_in: str = ""
    ) -> OpenCLIPImageEncoder:
        """Load from a local folder (``open_clip_config.json`` + weights) or the HF cache.

        A hub model (``hf-hub:org/name``) is looked up in the local Hugging Face cache only:
        nothing is downloaded unless ``allow_download`` (default: only when the environment
        sets ``HF_HUB_OFFLINE=0`` explicitly). ``named_in`` is the file that named the model,
        for the error message.
        """
        import open_clip

        name = str(name)
        if Path(name).is_dir():
            name = f"local-dir:{Path(name).resolve()}"
        source = name
        if not name.startswith(("hf-hub:", "local-dir:")):  # open_clip would build it untrained
            where = f" (named in {named_in})" if named_in else ""
            raise FileNotFoundError(
                f"CXR encoder {source!r}{where} names no weights: open_clip would build a "
                "randomly initialised model; give hf-hub:ORG/NAME or a folder with "
                "open_clip_config.json and open_clip_model.safetensors"
            )
        if allow_download is None:
            allow_download = downloads_allowed()
        if name.startswith("hf-hub:") and not allow_download:
            name = f"local-dir:{cached_snapshot(name.removeprefix('hf-hub:'), named_in)}"
        folder = Path(name.removeprefix("local-dir:"))
        if (
            name.startswith("local-dir:")
            and folder.is_dir()
            and not any(folder.glob("*.safetensors"))
        ):
            where = f" (named in {named_in})" if named_in else ""
            raise FileNotFoundError(
                f"CXR encoder {source}{where}: {folder} has no .safetensors weights, and open_clip "
                "would build a randomly initialised model; add open_clip_model.safetensors"
            )
        try:
            model = open_clip.create_model(name)
        except Exception as e:  # open_clip raises several types for a missing model
            repo = source.removeprefix("hf-hub:") if source.startswith("hf-hub:") else None
            how = (
                f"download {repo} on a machine with internet, copy the Hugging Face cache "
                f"here and set HF_HUB_OFFLINE=1, or pass"
                if repo
                else "pass"
            )
            raise FileNotFoundError(
                f"CXR encoder {source}{f' (named in {named_in})' if named_in else ''} is not "
                f"available locally: {how} a folder with open_clip_config.json and "
                f"open_clip_model.safetensors ({type(e).__name__}: {e})"
            ) from e
        return cls(model, source=source)

    def describe(self) -> str:
        return f"open_clip image encoder {self.source} (pretrained, frozen)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return F.normalize(self.model.encode_image((x - self.mean) / self.std), dim=-1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def save(self, directory: str | Path) -> Path:
        config = json.dumps({"kind": "open_clip", "source": self.source})
        atomic_write_text(Path(directory) / "config.json", config)
        return Path(directory)


def downloads_allowed() -> bool:
    """Whether hub models may be downloaded: only when ``HF_HUB_OFFLINE`` is set to 0."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("0", "false", "no", "off")


def cached_snapshot(repo: str, named_in: str = "") -> Path:
    """The local folder of a Hugging Face model repo already in the cache; never downloads."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as e:
        where = f" (named in {named_in})" if named_in else ""
        raise FileNotFoundError(
            f"model {repo}{where} is not in the local Hugging Face cache "
            f"{constants.HF_HUB_CACHE}, and nothing is downloaded without --allow-download "
            f"(or HF_HUB_OFFLINE=0). To provide it: on a machine with internet run "
            f"`huggingface-cli download {repo}`, copy that cache folder here (HF_HOME points "
            f"to it) and set HF_HUB_OFFLINE=1; or save the model as a folder with "
            f"open_clip_config.json and open_clip_model.safetensors and give that folder "
            f'as "source"{" in " + named_in if named_in else ""}'
        ) from e


def load_encoder(directory: str | Path, allow_download: bool | None = None) -> nn.Module:
    """Load an encoder saved with ``save(dir)`` (stand-in weights, or an open_clip reference).

    An open_clip reference to a hub model is resolved in the local cache only, unless
    ``allow_download`` (:meth:`OpenCLIPImageEncoder.from_local`).
    """
    from xr2ct_lib.checkpoint import read_json

    directory = Path(directory)
    cfg_file = directory / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"CXR encoder {directory}: missing config.json")
    cfg = read_json(cfg_file)
    kind = cfg.get("kind")
    if kind == "open_clip":
        if not cfg.get("source"):
            raise ValueError(f'{cfg_file}: an open_clip encoder needs a "source"')
        return OpenCLIPImageEncoder.from_local(cfg["source"], allow_download, str(cfg_file))
    if kind not in ("standin", "reader"):
        raise ValueError(f"CXR encoder {directory}: unknown kind {kind!r}")
    tensors, cfg = load_checkpoint(directory)
    if kind == "reader":
        from xr2ct_lib.models.classifiers import CXRClassifier

        reader = CXRClassifier.from_config(cfg["reader"])
        reader.load_state_dict(tensors)
        return ReaderCXREncoder(reader, cfg["embed_dim"], cfg.get("source", "")).eval()
    model = StandinCXREncoder.from_config(cfg)  # {"kind": "standin", **hparams}
    model.load_state_dict(tensors)
    return model.eval()
