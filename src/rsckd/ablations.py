"""Table 3: what each soft-label variant trains on and which teachers its soft-label file holds.

One table read by `rsckd ensemble` (which writes each variant's file) and by `rsckd train --ablation`, and a
dependency of both stages in dvc.yaml: editing a row re-runs the variant's file and its students.
"""

# variant -> (its training target, the teachers its soft-label file holds: none, the first one, the first
# ablation.k, or the ablation.k best by ensemble.curate_by)
ABLATIONS = {
    "noise_var": ("noise_var", "none"),
    "noise_teacher_var": ("noise_teacher_var", "first k"),
    "single_teacher": ("mean", "first 1"),
    "curated": ("mean", "curated k"),
    "raw_logits": ("raw_logits", "first k"),
}
