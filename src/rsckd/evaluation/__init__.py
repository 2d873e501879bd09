"""Scoring: the ICBHI metric, the teacher ensemble sweep and the second-generation ensemble."""
