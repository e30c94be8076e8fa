"""Architecture adapters, chosen from ``config.model_type`` (see :mod:`presso.compress.arch.base`)."""

from __future__ import annotations

from presso.compress.arch.albert import ALBERT
from presso.compress.arch.base import Adapter, UnsupportedArchitecture
from presso.compress.arch.bert import BERT, ELECTRA, ROBERTA
from presso.compress.arch.deberta import DEBERTA_V2
from presso.compress.arch.distilbert import DISTILBERT
from presso.compress.arch.mpnet import MPNET

ADAPTERS: tuple[Adapter, ...] = (BERT, ROBERTA, ELECTRA, DISTILBERT, ALBERT, DEBERTA_V2, MPNET)
_BY_TYPE = {model_type: adapter for adapter in ADAPTERS for model_type in adapter.model_types}
SUPPORTED_MODEL_TYPES = tuple(sorted(_BY_TYPE))

__all__ = ["ADAPTERS", "Adapter", "SUPPORTED_MODEL_TYPES", "UnsupportedArchitecture", "adapter_for"]


def adapter_for(model_or_config) -> Adapter:
    """The adapter of a model (or its config) by ``config.model_type``.

    Raises:
        UnsupportedArchitecture: no adapter covers that model type (the message lists those that do).
    """
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in _BY_TYPE:
        raise UnsupportedArchitecture(f"model type {model_type!r} is not supported; supported: "
                                      f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    return _BY_TYPE[model_type]
