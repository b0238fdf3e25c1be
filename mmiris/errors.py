"""Errors users see. Each names the file, line, field or artifact and what was expected."""


class MmirisError(Exception):
    """Base class: a problem the user can fix (bad input, missing artifact, bad parameter)."""


class InputError(MmirisError):
    """Malformed input data. Message names the source, line/field and the expectation."""


class SchemaError(MmirisError):
    """A table does not match its contract in schemas/."""


class ArtifactNotFound(MmirisError):
    """No published version matches the requested name/version."""


class ConfigError(MmirisError, ValueError):
    """A typed config was given a field it does not have (or a bad value)."""
