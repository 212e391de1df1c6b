"""User-facing errors: the entry point prints their message (no traceback) and exits non-zero."""


class CdrbenchError(Exception):
    """Base class of errors caused by input (files, config), not by a bug."""

    exit_code = 2


class DataFileError(CdrbenchError):
    """A raw data file is missing, truncated or does not match its published checksum."""


class DataFormatError(CdrbenchError):
    """A raw file exists but cannot be parsed; the message names the file and the line."""


class ConfigError(CdrbenchError):
    """A config value is inconsistent (the message names the key)."""
