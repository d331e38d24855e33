"""Locations: a local path or a URL (``s3://bucket/key``), as plain strings.

`join`, `dirname`, `basename`, `absolute` and `relative` work on both kinds, so no other
module calls ``os.path`` on something that may be a URL. An object's key is literal: ``..``,
``.`` and empty segments are segments of their own, never climbed out of.
"""

from __future__ import annotations

import os
import posixpath


def scheme(location: str) -> str | None:
    """The URL scheme of ``location`` (``s3``), or None for a local path (``file://``
    included)."""
    head, sep, _ = location.partition("://")
    if not sep or not head or not head.replace("+", "").replace("-", "").isalnum():
        return None
    return None if head == "file" else head.lower()


def is_url(location: str) -> bool:
    return scheme(location) is not None


def _local(location: str) -> str:
    return location[len("file://"):] if location.startswith("file://") else location


def absolute(location: str) -> str:
    """``location`` made absolute: a local path as ``os.path.abspath``; a URL as it is,
    without a trailing ``/`` (an object's key is literal: ``a/../b`` and ``a//b`` are keys
    of their own, not paths to normalise)."""
    kind = scheme(location)
    if kind is None:
        return os.path.abspath(_local(location))
    rest = location.split("://", 1)[1].rstrip("/")
    return f"{kind}://{rest}"


def join(base: str, *parts: str) -> str:
    """``base`` and ``parts`` joined with the location's own separator (for a URL, always
    below ``base``, whatever the parts hold)."""
    if is_url(base):
        return "/".join([base.rstrip("/"), *parts])  # parts literal: a key's own segments
    return os.path.join(base, *parts)


def dirname(location: str) -> str:
    if is_url(location):
        kind, rest = location.split("://", 1)
        return f"{kind}://{rest.rstrip('/').rsplit('/', 1)[0] if '/' in rest else rest}"
    return os.path.dirname(location)


def basename(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1] if is_url(location) else \
        os.path.basename(location)


#: Key segments that a path would read as something else, and how a relative name spells
#: them (so an output's key stays under ``--out``).
_LITERAL = {"": "%2F", ".": "%2E", "..": "%2E%2E"}


def relative(location: str, start: str) -> str:
    """``location`` relative to the folder ``start``, '/'-separated. Under a URL, the key's
    own segments, with an empty, ``.`` or ``..`` segment spelled ``%2F``, ``%2E``,
    ``%2E%2E``: a name that cannot climb out of a folder it is joined to."""
    if is_url(location) or is_url(start):
        location, start = absolute(location), absolute(start)
        if location.startswith(start + "/"):
            segments = location[len(start) + 1:].split("/")
            return "/".join(_LITERAL.get(segment, segment) for segment in segments)
        return posixpath.relpath(location.split("://", 1)[1], start.split("://", 1)[1])
    return os.path.relpath(absolute(location), absolute(start)).replace(os.sep, "/")


def inside(location: str, folder: str) -> bool:
    """Whether ``location`` is ``folder`` or under it (both absolute)."""
    separator = "/" if is_url(folder) else os.sep
    return location == folder or location.startswith(folder.rstrip(separator) + separator)


