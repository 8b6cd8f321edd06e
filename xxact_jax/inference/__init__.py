"""Inference from a trained workdir: measured-pattern readers and the Predictor.

Submodules are imported on use so that reading a pattern does not pull in JAX.
"""
