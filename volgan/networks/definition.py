"""Networks that know how they were built (issue #21): every exported volgan network carries its constructor
call as ``network.definition`` (``{"_target_": "volgan.networks.<name>", **arguments}``, JSON), which
``volgan.io.save_weights`` writes beside the weights; ``build_network`` rebuilds it from there."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch.nn as nn

import volgan.networks as networks
from volgan.config import jsonable
from volgan.errors import VolganConfigError, VolganDataError
from volgan.io import load_weights, read_sidecar, weights_sidecar

__all__ = ["records_definition", "definition_of", "build_network", "load_network"]

PREFIX = "volgan.networks."


def _arguments(sig: inspect.Signature, args: tuple, kwargs: dict, drop_first: bool) -> dict[str, Any]:
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for i, (name, value) in enumerate(bound.arguments.items()):
        if drop_first and i == 0:
            continue
        if sig.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif sig.parameters[name].kind is not inspect.Parameter.VAR_POSITIONAL:
            out[name] = value
    return jsonable(out)


def records_definition(fn: Callable) -> Callable:
    """Decorate a network class's ``__init__`` or a factory returning a network: the network gets
    ``definition`` = the call that built it (the factory's, when a factory wraps a class)."""
    sig = inspect.signature(fn)
    if fn.__name__ == "__init__":
        @functools.wraps(fn)
        def init(self, *args, **kwargs):
            fn(self, *args, **kwargs)
            if type(self).__init__ is init or not hasattr(self, "definition"):
                name = type(self).__name__
                self.definition = {"_target_": PREFIX + name, **_arguments(sig, (self, *args), kwargs, True)}

        return init

    @functools.wraps(fn)
    def factory(*args, **kwargs):
        net = fn(*args, **kwargs)
        net.definition = {"_target_": PREFIX + fn.__name__, **_arguments(sig, args, kwargs, False)}
        return net

    return factory


def definition_of(network: nn.Module) -> dict[str, Any] | None:
    """The network's recorded definition (unwrapped from DDP), or ``None``."""
    net = network.module if hasattr(network, "module") else network
    d = getattr(net, "definition", None)
    return dict(d) if isinstance(d, Mapping) else None


def build_network(definition: Mapping[str, Any]) -> nn.Module:
    """Build a network from a recorded definition; only public ``volgan.networks`` names are allowed (a weights
    file's sidecar is data, not a way to run arbitrary code)."""
    target = str(definition.get("_target_", ""))
    name = target[len(PREFIX):] if target.startswith(PREFIX) else ""
    if name not in getattr(networks, "__all__", ()):
        raise VolganConfigError(f"cannot build network {target!r}: only volgan.networks names are allowed")
    kwargs = {k: v for k, v in definition.items() if k != "_target_"}
    return getattr(networks, name)(**kwargs)


def load_network(path: str | os.PathLike, device: Any = "cpu") -> nn.Module:
    """The network saved at ``path`` by ``save_weights``, rebuilt from its sidecar (``model.json``) and loaded; a
    file without a recorded definition is one line naming it."""
    side = read_sidecar(path)
    definition = (side or {}).get("network")
    if not isinstance(definition, Mapping):
        raise VolganDataError(str(path), f"no network definition beside it ({weights_sidecar(path).name}): build the "
                              "network in code and load the weights with volgan.io.load_weights")
    return load_weights(build_network(definition).to(device), path, device).eval()
