"""The one plugin registry: targets, source kinds and compressed variants each keep one.

Entries are added by a decorator in their own module; the modules listed as built-in are imported
on first use (so `interop --help` imports none of them; a callable names them then), and a key registered twice is an error.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Hashable


class RegistrationError(RuntimeError):
    """Two plugins claim one key (a programming error, not a user's)."""


class Registry:
    def __init__(self, what: str, builtin: "tuple[str, ...] | Callable[[], tuple[str, ...]]"):
        self.what = what  # "a target named", "variant" ...: how the error names an entry
        self.builtin = builtin
        self._items: dict[Hashable, Any] = {}
        self._loaded = False

    def add(self, key: Hashable, item: Any, owner: str = "") -> None:
        if key in self._items:
            where = f" ({owner or type(self._items[key]).__module__})"
            raise RegistrationError(f"{self.what} {key!r} is already registered{where}")
        self._items[key] = item

    def remove(self, key: Hashable) -> None:
        self._items.pop(key, None)

    def all(self) -> dict[Hashable, Any]:
        """Every entry, in registration order (built-ins first)."""
        if not self._loaded:
            self._loaded = True
            for module in self.builtin() if callable(self.builtin) else self.builtin:
                importlib.import_module(module)
        return dict(self._items)
