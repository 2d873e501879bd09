"""ICBHI data layer: reader, prompts, synthetic corpus, cycle table, features."""
