"""lmms-eval model names, derived from the registries: ``<method>_<family suffix>`` for every method
that asks for names of its own (``tome_llava``, ``fastv_llava_onevision``, ...), each with a simple
and a chat class (``TomeLlava``, ``TomeLlavaChat``). ``dymu_llava`` serves every family (dispatch on
the checkpoint's model_type); the other names fix their family."""
from __future__ import annotations

from ..methods import FAMILIES, METHODS

GENERIC_FAMILY = "llava"  # the family whose suffix dispatches on model_type (dymu_llava, tome_llava, ...)


def model_names() -> dict[str, tuple[str, str]]:
    """model id -> (method, family)."""
    out = {}
    for family in FAMILIES:
        for method in METHODS:
            if METHODS[method].model_name:
                out[f"{method}_{FAMILIES[family].suffix}"] = (method, family)
    return out


def model_preset(model: str) -> tuple[str, str]:
    """(method, family) an lmms-eval model name stands for; ConfigError for a name this plugin has not."""
    from ..errors import ConfigError

    names = model_names()
    if model not in names:
        raise ConfigError(f"unknown model {model!r}; this plugin serves {', '.join(names)}")
    return names[model]


def class_name(model: str, chat: bool) -> str:
    """``fastv_llava_onevision`` -> ``FastvLlavaOnevision`` (``...Chat`` for the chat class)."""
    return "".join(part.capitalize() for part in model.split("_")) + ("Chat" if chat else "")


def model_of_class(name: str) -> tuple[str, bool] | None:
    """The inverse of class_name: (model id, chat?) or None."""
    for model in model_names():
        for chat in (False, True):
            if class_name(model, chat) == name:
                return model, chat
    return None
