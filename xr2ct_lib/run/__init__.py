"""What a run has on disk: which networks it uses (:mod:`~xr2ct_lib.run.networks`), the
cohort's cached latents and embeddings (:mod:`~xr2ct_lib.run.latents`,
:mod:`~xr2ct_lib.run.embeddings`; loaders only read) and the one step that writes a missing
cache (:mod:`~xr2ct_lib.run.encode`)."""
