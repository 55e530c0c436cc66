"""Registry: the entries of one kind (models, data sources, dense optimizers) by name, filled by their own modules.

A module that defines a model (or a data source, an optimizer) registers it next to its
definition; the code that builds a run looks it up by the name in the config. So adding one
touches its own module (and its YAML), never a central if/elif.

Example:
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def square(side: float) -> float:
    ...     return side * side
    >>> shapes["square"](3.0), shapes.names()
    (9.0, ['square'])
    >>> shapes["circle"]
    Traceback (most recent call last):
    ...
    recframe.errors.ConfigError: unknown shape 'circle'; choose one of ['square']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from recframe.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind by name.

    Args:
        kind: what the entries are, for messages (``model``, ``data source``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; returns it.

        Raises:
            ValueError: ``name`` is registered already.
        """
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator form of ``add``: ``@registry.register("name")`` above the entry."""
        return lambda entry: self.add(name, entry)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of {self.names()}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs, in registration order."""
        return list(self._entries.items())
