"""Prompt Expander core: turn a short concept into a detailed Stable Diffusion prompt."""
