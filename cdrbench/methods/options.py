"""Option groups of a method's YAML as dataclasses, with errors that name the key."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional

from cdrbench.errors import ConfigError


def build_options(cls, values: Optional[dict], group: str):
    """``cls(**values)``; an unknown key fails naming ``method.<group>`` and the valid keys."""
    try:
        return cls(**(values or {}))
    except TypeError as error:
        valid = [f.name for f in dataclasses.fields(cls)]
        raise ConfigError(f"method.{group}: {error} (valid keys: {valid})") from error


def check_choice(key: str, value, allowed: Iterable) -> None:
    """``value in allowed``, else a ConfigError naming ``key``, the value and the choices."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {allowed}")


def check_choices(checks: Iterable[tuple[str, Any, Iterable]]) -> None:
    """:func:`check_choice` for each ``(key, value, allowed)``, in order."""
    for key, value, allowed in checks:
        check_choice(key, value, allowed)
