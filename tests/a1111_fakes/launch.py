"""Test stand-in for A1111's launch module."""
installed = set()
pip_calls = []


def is_installed(package):
    return package in installed


def run_pip(command, desc=None, live=False):
    pip_calls.append(command)
