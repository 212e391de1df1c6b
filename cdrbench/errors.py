"""User-facing errors: the entry point prints their message (no traceback) and exits non-zero.

Exit codes of ``python -m cdrbench`` (one rule, documented in the README):

* 0 — success;
* 1 — a bug in cdrbench (a traceback is printed: please report it);
* 2 — a user error: a config value (including Hydra's own override and composition errors),
  a data file, or a file system problem (a run directory that cannot be written, a full disk,
  a corrupt checkpoint). One line names the key, file or path, never a traceback;
* 130 / 143 — interrupted by SIGINT (Ctrl-C) / SIGTERM; ``run.json`` records ``interrupted``.
"""

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class CdrbenchError(Exception):
    """Base class of errors caused by input (files, config), not by a bug."""

    exit_code = EXIT_USER_ERROR


class DataFileError(CdrbenchError):
    """A raw data file is missing, truncated or does not match its published checksum."""


class DataFormatError(CdrbenchError):
    """A raw file exists but cannot be parsed; the message names the file and the line."""


class ConfigError(CdrbenchError):
    """A config value is inconsistent (the message names the key)."""


class OutputError(CdrbenchError):
    """A run's own files cannot be written or read back (the message names the path): an
    output directory under a file, read-only or full, or a corrupt checkpoint."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``except KeyboardInterrupt`` path (run status
    ``interrupted``, cleanup of half-written files) treats both signals alike."""
