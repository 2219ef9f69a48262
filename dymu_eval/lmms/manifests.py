"""Entry point of the ``lmms_eval.models`` group (setup.cfg): the models this plugin adds.

Each model has a chat class (lmms-eval's default) and a simple class (``--force_simple``, which
also offers loglikelihood). The names come from the method and family registries (``lmms.names``);
the classes are made when lmms-eval imports them (``lmms.model``). Kept import-light.
"""
from __future__ import annotations

from .names import class_name, model_names

_MODULE = "dymu_eval.lmms.model"


def get_manifests():
    """ModelManifest objects for lmms-eval's registry (called by lmms-eval at import)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(model_id=name, simple_class_path=f"{_MODULE}.{class_name(name, False)}",
                      chat_class_path=f"{_MODULE}.{class_name(name, True)}")
        for name in model_names()
    ]
