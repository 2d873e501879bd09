"""The report stage: figures, tables and headline metrics rendered from the metrics files only.

Keeping the report a pure function of small committed JSON files lets `dvc metrics diff` / `dvc plots diff`
compare experiments, and lets anyone re-render the paper's tables without the models or the data.
"""
