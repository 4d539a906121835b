"""Named hook points: read or replace any activation during an ordinary forward pass.

A `HookPoint` is an identity module placed where an analysis may want to look. With no
function attached it costs one Python call; attached functions may return a replacement
tensor. Everything downstream (caching, patching, lenses, pruning, SAEs) goes through these,
so there is exactly one forward pass in the project.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn

from sparsecircuits.errors import UserError

HookFn = Callable[[torch.Tensor, "HookPoint"], torch.Tensor | None]


class HookNameError(UserError, KeyError):
    """A hook name or glob that matches no hook point (a KeyError too, for dict-like use)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class HookEditError(UserError, ValueError):
    """A hook function returned a tensor that cannot stand in for the activation."""


class HookPoint(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.fns: list[HookFn] = []
        # Called with the value the hook point passes on, after every edit (a spliced module
        # that reads this point sees what the model downstream sees).
        self.observers: list[Callable[[torch.Tensor], None]] = []

    @property
    def active(self) -> bool:
        return bool(self.fns or self.observers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fn in self.fns:
            replacement = fn(x, self)
            if replacement is not None:
                if replacement.shape != x.shape or replacement.dtype != x.dtype:
                    raise HookEditError(
                        f"an edit at {self.name} returned {tuple(replacement.shape)} "
                        f"{replacement.dtype} for an activation of {tuple(x.shape)} {x.dtype}"
                    )
                x = replacement
        for observe in self.observers:
            observe(x)
        return x


class ActivationCache(dict[str, torch.Tensor]):
    """Activations by hook name, filled during the forward passes run inside `cache()`."""

    def stacked(self, pattern: str) -> torch.Tensor:
        """Stack every cached activation whose name matches `pattern`, in layer order."""
        names = [name for name in self if fnmatch.fnmatchcase(name, pattern)]
        if not names:
            raise KeyError(f"no cached activation matches {pattern!r}")
        return torch.stack([self[name] for name in names])


class HookedModule(nn.Module):
    """Gives a module a table of its hook points and context managers to use them."""

    def setup_hook_points(self) -> None:
        """Call at the end of __init__: names every HookPoint after its module path."""
        self._hook_points: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self._hook_points[name] = module

    @property
    def hook_names(self) -> list[str]:
        return list(self._hook_points)

    @property
    def spliced_modules(self) -> dict[str, nn.Module]:
        """Modules spliced into the forward pass (SAEs), by the hook point they write."""
        if "_spliced" not in self.__dict__:
            self.__dict__["_spliced"] = {}
        return self.__dict__["_spliced"]

    def add_hook_point(self, name: str) -> HookPoint:
        """A new hook point outside the module tree (one a spliced-in module, e.g. an SAE,
        passes its own values through), listed, cached and edited like every other."""
        if name in self._hook_points:
            raise UserError(f"the model already has a hook point {name!r}")
        point = HookPoint()
        point.name = name
        self._hook_points[name] = point
        return point

    def remove_hook_point(self, name: str) -> None:
        """Forget a hook point `add_hook_point` made (module hook points stay)."""
        point = self._hook_points.get(name)
        if point is None or any(point is module for module in self.modules()):
            raise UserError(f"{name!r} is not a hook point added by add_hook_point")
        del self._hook_points[name]

    def resolve_hook_names(self, patterns: str | Iterable[str]) -> list[str]:
        """Expand names and shell-style globs (`blocks.*.hook_resid_post`) to hook names."""
        if isinstance(patterns, str):
            patterns = [patterns]
        resolved: list[str] = []
        for pattern in patterns:
            matches = [name for name in self._hook_points if fnmatch.fnmatchcase(name, pattern)]
            if not matches:
                raise HookNameError(self.unknown_hook_message(pattern))
            resolved.extend(name for name in matches if name not in resolved)
        return resolved

    def unknown_hook_message(self, pattern: str) -> str:
        close = difflib.get_close_matches(pattern, self._hook_points, n=3, cutoff=0.6)
        if not close:  # a wrong suffix: suggest hooks of the same layer or module
            stem = pattern.rsplit(".", 1)[0]
            close = [name for name in self._hook_points if name.startswith(stem + ".")][:3]
        hint = f"; did you mean {', '.join(close)}?" if close else "; see model.hook_names"
        return f"no hook point matches {pattern!r}{hint}"

    @contextmanager
    def hooks(self, pairs: Iterable[tuple[str, HookFn]]) -> Iterator[None]:
        """Attach `fn` to every hook point matching each name or glob, for the `with` block.

        A function receives (activation, hook_point) and may return a replacement tensor.
        """
        attached: list[tuple[HookPoint, HookFn]] = []
        try:
            for pattern, fn in pairs:
                for name in self.resolve_hook_names(pattern):
                    point = self._hook_points[name]
                    point.fns.append(fn)
                    attached.append((point, fn))
            yield
        finally:
            for point, fn in attached:
                point.fns.remove(fn)

    @contextmanager
    def cache(
        self,
        names: str | Iterable[str],
        *,
        detach: bool = True,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> Iterator[ActivationCache]:
        """Record only the named activations (globs allowed) of forward passes in the block.

        With `detach=False` the cached tensors stay in the autograd graph (attribution
        patching needs their gradients). `device` and `dtype` convert each tensor as it is
        recorded (e.g. to the CPU in bfloat16, to halve what a long pass keeps).
        """
        store = ActivationCache()

        def record(x: torch.Tensor, point: HookPoint) -> None:
            value = x.detach() if detach else x
            if device is not None or dtype is not None:
                value = value.to(device=device, dtype=dtype)
            store[point.name] = value

        with self.hooks((name, record) for name in self.resolve_hook_names(names)):
            yield store

    def edit(self, edits: dict[str, HookFn]) -> AbstractContextManager[None]:
        """Replace or modify activations: `{name_or_glob: fn(activation, hook) -> tensor}`."""
        return self.hooks(edits.items())
