"""The pretrained readers: one interface (:mod:`.base`), one module per reader (:mod:`.clot`
reads CTs, :mod:`.cxr` X-rays, :mod:`.latent` VAE latents), and :data:`READERS`, the registry
that the CLI's pretraining commands and chapter 8 read."""

from xr2ct_lib.train.readers import clot, cxr, latent

READERS = {r.name: r for r in (clot.READER, cxr.READER, latent.READER)}
