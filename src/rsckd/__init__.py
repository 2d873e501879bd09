"""Knowledge distillation from BTS ensembles for respiratory sound classification."""
