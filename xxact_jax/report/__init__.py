"""Figures and summaries from a trained workdir (`python -m xxact_jax.report`)."""
