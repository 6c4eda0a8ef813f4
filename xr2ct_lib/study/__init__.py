"""The reader-study kit of chapter 12 (the paper's user studies and Table 6).

- :mod:`~xr2ct_lib.study.cases`: the one adapter that reads a run directory;
- :mod:`~xr2ct_lib.study.select`: which patients go into the kit (seeded, validated);
- :mod:`~xr2ct_lib.study.kit`: writes the offline HTML kit and its answer key;
- :mod:`~xr2ct_lib.study.score`: reads the readers' CSV files and computes Table 6;
- :mod:`~xr2ct_lib.study.automated`: answers of the book's classifiers in the same format.
"""
