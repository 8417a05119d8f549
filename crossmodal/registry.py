"""Name -> entry registries, the timm way (`register_model` + `create_model`): a sweep swaps
architectures with one override (`model.backbone=resnet18_small`)."""
from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        """Decorator (``@REG.register()`` / ``@REG.register("name")``); ``REG.register(name)(entry)`` adds any entry."""

        def wrap(fn: F) -> F:
            key = name or fn.__name__
            if key in self._entries:
                raise KeyError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = fn
            return fn

        return wrap

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def values(self) -> list:
        return [self._entries[name] for name in self.names()]

    def get(self, name: str) -> Callable:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"unknown {self.kind} {name!r}.{hint} Registered: {', '.join(self.names())}")
        return self._entries[name]

    __getitem__ = get

    def create(self, name: str, **kwargs):
        return self.get(name)(**kwargs)


FACE_MODELS = Registry("face backbone")
SPEECH_MODELS = Registry("speech network")
