"""A tiny cycle table and learnable features for training-run tests (no audio needed)."""

import numpy as np
import pandas as pd

from rsckd.data.table import CYCLE_COLUMNS


def cycle_table(n_fit: int, n_val: int, n_test: int, prompts: list[str], per_patient: int) -> pd.DataFrame:
    """Rows of train/val/test subsets with cycling labels, ``per_patient`` cycles per patient."""
    subsets = ["train"] * n_fit + ["val"] * n_val + ["test"] * n_test
    n = len(subsets)
    labels = np.concatenate([np.arange(k) % 4 for k in (n_fit, n_val, n_test)])
    patient = np.concatenate(
        [base + np.arange(k) // per_patient for base, k in ((100, n_fit), (200, n_val), (300, n_test))]
    )
    stems = [f"{p}_1b1_Tc_sc_Meditron" for p in patient]
    rows = np.arange(n) % per_patient
    return pd.DataFrame(
        {
            "id": [f"{s}:{r}" for s, r in zip(stems, rows, strict=True)],
            "stem": stems,
            "row": rows,
            "patient": patient,
            "split": ["test" if s == "test" else "train" for s in subsets],
            "subset": subsets,
            "label": labels,
            "crackle": labels % 2,
            "wheeze": labels // 2,
            "start": rows * 2.0,
            "end": rows * 2.0 + 1.5,
            "location": "Tc",
            "prompt_location": "Tc",
            "device": "Meditron",
            "mode": "sc",
            "age": 40.0,
            "sex": "M",
            "age_group": "adult",
            "prompt": [prompts[i % len(prompts)] for i in range(n)],
            "native_sr": 4000,
            "wav": [f"data/synthetic/{s}.wav" for s in stems],
        },
        columns=CYCLE_COLUMNS,
    )


def learnable_features(labels: np.ndarray, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Noise with a class signal in a few bins, so tiny models learn within an epoch or two."""
    x = rng.normal(-50.0, 10.0, (len(labels), *shape)).astype(np.float32)
    for c in range(4):
        x[labels == c, :, 2 * c : 2 * c + 3] += 25.0
    return x
