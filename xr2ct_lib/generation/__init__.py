"""Generation: a chest X-ray in, a CTPA volume out.

- :mod:`~xr2ct_lib.generation.pipeline`: ``XRay2CTPAPipeline`` (the one generation path);
- :mod:`~xr2ct_lib.generation.samplers`: the samplers, their schedulers and default steps;
- :mod:`~xr2ct_lib.generation.load`: the pipeline a run uses (shipped or live);
- :mod:`~xr2ct_lib.generation.cache`: the book's generated volumes, cached per patient;
- :mod:`~xr2ct_lib.generation.volume` and :mod:`~xr2ct_lib.generation.cohort`:
  ``xr2ct generate`` for one X-ray or a cohort (NIfTI files).
"""
