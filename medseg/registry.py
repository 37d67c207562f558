"""Name -> builder registries, so configs pick components by name and typos list the valid names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from medseg.errors import MedsegError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    """A named table of builders: ``@REG.register("unet")`` then ``REG.get("unet")``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = item
            return item

        return add

    def get(self, name: str, key: str | None = None) -> T:
        """The builder registered as ``name``; an unknown name is a user error naming the config ``key``."""
        if name not in self._items:
            where = f"config key '{key}': " if key else ""
            raise MedsegError(f"{where}unknown {self.kind} '{name}'; valid names: {', '.join(sorted(self._items))}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)
