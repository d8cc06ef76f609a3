"""AdapterRouter: load, apply, switch and remove LoRA adapters on ONE model, by name or per request.

Isolation (R17.3, R17.4): a router serves one kind of model ("ar" or "diffusion") and one base model id;
adding an adapter of the other kind raises :class:`ModalityError` naming both kinds, one trained on a
different base model raises :class:`ConfigError` naming both ids. Switching copies the chosen adapter's
A/B tensors into the wrapped layers (wrapping them on first use); layers it does not cover are disabled,
and ``activate(None)`` restores the base model's output exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from arrowdiff.adapters.lora import Adapter, LoRALinear, lora_layers
from arrowdiff.errors import ConfigError, ModalityError


class AdapterRouter:
    """Adapters for one model of one kind; at most one is active at a time."""

    def __init__(self, model: nn.Module, kind: str, base_model: str) -> None:
        self.model = model
        self.kind = kind
        self.base_model = base_model
        self.adapters: dict[str, Adapter] = {}
        self.active: str | None = None

    def add(self, adapter: Adapter, name: str | None = None) -> str:
        """Register ``adapter`` (under ``name``, default its own); returns the name."""
        if adapter.kind != self.kind:
            raise ModalityError(
                f"adapter {adapter.name!r} is a {adapter.kind!r} adapter and cannot be applied to the "
                f"{self.kind!r} model; load it into the engine's {adapter.kind!r} model instead"
            )
        if adapter.base_model != self.base_model:
            raise ConfigError(
                f"adapter {adapter.name!r} was trained on base model {adapter.base_model!r}, but this "
                f"{self.kind!r} model is {self.base_model!r}"
            )
        name = name or adapter.name
        self.adapters[name] = adapter
        return name

    def remove(self, name: str) -> None:
        """Forget an adapter (deactivating it first if it is active)."""
        self._check(name)
        if self.active == name:
            self.activate(None)
        del self.adapters[name]

    def _check(self, name: str) -> None:
        if name not in self.adapters:
            raise ConfigError(f"no adapter named {name!r}; loaded: {sorted(self.adapters) or 'none'}")

    def activate(self, name: str | None) -> None:
        """Make ``name`` the active adapter (None: the base model alone)."""
        if name is None:
            for layer in lora_layers(self.model).values():
                layer.unmerge()
                layer.enabled = False
            self.active = None
            return
        self._check(name)
        adapter = self.adapters[name]
        layers = lora_layers(self.model)
        for path in adapter.paths:
            if path not in layers:
                layers[path] = self._wrap(path, adapter)
        for path, layer in layers.items():
            layer.unmerge()
            if path not in adapter.paths:
                layer.enabled = False
                continue
            a, b = adapter.tensors[f"{path}.lora_A"], adapter.tensors[f"{path}.lora_B"]
            if tuple(b.shape) != (layer.out_features, a.shape[0]) or a.shape[1] != layer.in_features:
                raise ConfigError(
                    f"adapter {name!r}: {path} has A {list(a.shape)}, B {list(b.shape)}, the layer is "
                    f"{layer.out_features}x{layer.in_features}"
                )
            layer.lora_A = nn.Parameter(a.clone(), requires_grad=False)
            layer.lora_B = nn.Parameter(b.clone(), requires_grad=False)
            layer.r, layer.scaling = a.shape[0], adapter.config.scaling
            layer.enabled = True
        self.active = name

    def _wrap(self, path: str, adapter: Adapter) -> LoRALinear:
        parent, _, attr = path.rpartition(".")
        try:
            owner = self.model.get_submodule(parent) if parent else self.model
            base = getattr(owner, attr)
        except AttributeError as e:
            raise ConfigError(
                f"adapter {adapter.name!r} targets {path!r}, which this {self.kind!r} model does not have"
            ) from e
        layer = LoRALinear(base, adapter.config.r, adapter.config.alpha)
        setattr(owner, attr, layer)
        return layer

    @contextmanager
    def using(self, name: str | None) -> Iterator[None]:
        """Activate ``name`` for one request, then restore the previously active adapter."""
        before = self.active
        if name == before:
            yield
            return
        self.activate(name)
        try:
            yield
        finally:
            with torch.no_grad():
                self.activate(before)
