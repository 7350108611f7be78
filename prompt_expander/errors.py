"""Exceptions with messages meant to be shown to users as they are."""


class ExpanderError(Exception):
    """Base class: anything a host should show to the user instead of crashing."""


class ModelLoadError(ExpanderError):
    pass


class UnsafeWeightsError(ModelLoadError):
    pass


class AdapterError(ExpanderError):
    pass


class InputError(ExpanderError, ValueError):
    pass


class NegativeNotSupportedError(ExpanderError):
    pass


class DataError(ExpanderError):
    pass


class Interrupted(ExpanderError):
    pass
