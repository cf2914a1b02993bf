"""A host's settings and their overrides: ``NAME`` then ``NAME_overrides``, merged key by key.

Groups and hosts set a whole section (``fleet_run``, ``fleet_provision``) where they own it,
and change only what differs with ``NAME_overrides``, which Ansible's variable precedence
merges no deeper than a whole variable. One reading of that layering for every section.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from fleet.errors import InputError


def layers(
    variables: Mapping[str, Any], name: str, *, error: type[InputError], example: str
) -> list[tuple[str, Mapping[str, Any]]]:
    """(section name, section) of ``name`` then ``name_overrides``, for those that are set.

    A section that is not a mapping raises ``error`` naming it, with ``example`` as the fix.
    """
    found = []
    for key in (name, f"{name}_overrides"):
        section = variables.get(key)
        if section is None:
            continue
        if not isinstance(section, Mapping):
            raise error(
                f"{key}: expected a mapping of settings, got {type(section).__name__}",
                fix=f"write {key} as a mapping, e.g. {key}: {example}",
            )
        found.append((key, section))
    return found


def merged(
    variables: Mapping[str, Any],
    name: str,
    *,
    error: type[InputError],
    example: str,
    deep: Collection[str] = (),
) -> dict[str, tuple[Any, str]]:
    """Every key of the layered sections: (value, where it was set), the overrides winning.

    Keys in ``deep`` whose values are mappings in both merge entry by entry.
    """
    merged_: dict[str, tuple[Any, str]] = {}
    for section_name, section in layers(variables, name, error=error, example=example):
        for raw_key, value in section.items():
            key = str(raw_key)
            where = f"{section_name}.{key}"
            previous = merged_.get(key)
            if (
                key in deep
                and previous is not None
                and isinstance(previous[0], Mapping)
                and isinstance(value, Mapping)
            ):
                merged_[key] = ({**previous[0], **value}, where)
            else:
                merged_[key] = (value, where)
    return merged_
