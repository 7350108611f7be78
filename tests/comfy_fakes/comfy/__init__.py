"""Test stand-in for the comfy package."""
