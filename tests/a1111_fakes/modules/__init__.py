"""Test stand-ins for the parts of A1111's `modules` the script uses."""
