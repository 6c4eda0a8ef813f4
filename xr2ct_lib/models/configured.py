"""One way for a network to record its constructor arguments: diffusers' ``ConfigMixin``.

:class:`ConfiguredModule` is an ``nn.Module`` whose ``@register_to_config`` constructor
records its arguments in ``self.config``; :meth:`~ConfiguredModule.config_dict` gives them
JSON-ready (with the class name), :meth:`~ConfiguredModule.from_config` rebuilds the module
from such a dict (or from a checkpoint's older JSON: keys that are not constructor
arguments, such as ``kind``, are left out), and :attr:`~ConfiguredModule.hparams` is the
read-only dict of arguments alone that classifier checkpoints store under ``"hparams"``.
"""

from __future__ import annotations

from typing import Any

from diffusers.configuration_utils import ConfigMixin
from torch import nn

# keys a saved config may hold beside the constructor arguments
NOT_ARGUMENTS = ("class", "kind", "_class_name", "_use_default_values", "_diffusers_version")


def jsonable(value: Any) -> Any:
    """Tuples as lists and NumPy scalars as Python numbers, at any depth."""
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalar
        return value.item()
    return value


class ConfiguredModule(nn.Module, ConfigMixin):
    """Base of the book's networks: constructor arguments recorded by ``register_to_config``."""

    config_name = "config.json"

    @property
    def hparams(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready (read-only; from ``self.config``)."""
        return {k: jsonable(v) for k, v in self.config.items() if not k.startswith("_")}

    def config_dict(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready, with the class name."""
        return {"_class_name": type(self).__name__, **self.hparams}

    @classmethod
    def from_config(cls, config: dict, **kwargs):
        """Rebuild from :meth:`config_dict`, :attr:`hparams` or a checkpoint's JSON (keys that
        are not constructor arguments, such as ``kind``, are left out)."""
        args = {k: v for k, v in dict(config).items() if k not in NOT_ARGUMENTS}
        return super().from_config(args, **kwargs)
