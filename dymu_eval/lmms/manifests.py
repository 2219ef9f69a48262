"""Entry point of the ``lmms_eval.models`` group (setup.cfg): the models this plugin adds.

Each model has a chat class (lmms-eval's default) and a simple class (``--force_simple``,
which also offers loglikelihood). Kept import-light: lmms-eval imports the classes lazily.
"""
from __future__ import annotations

_MODULE = "dymu_eval.lmms.model"

# model id -> (simple class, chat class)
MODELS = {
    "dymu_llava": ("DymuLlava", "DymuLlavaChat"),
    "tome_llava": ("TomeLlava", "TomeLlavaChat"),
    "fastv_llava": ("FastvLlava", "FastvLlavaChat"),
    "random_llava": ("RandomLlava", "RandomLlavaChat"),
    "pool_llava": ("PoolLlava", "PoolLlavaChat"),
    "visionzip_llava": ("VisionzipLlava", "VisionzipLlavaChat"),
    "dymu_llava_onevision": ("DymuLlavaOnevision", "DymuLlavaOnevisionChat"),
    "tome_llava_onevision": ("TomeLlavaOnevision", "TomeLlavaOnevisionChat"),
    "fastv_llava_onevision": ("FastvLlavaOnevision", "FastvLlavaOnevisionChat"),
    "random_llava_onevision": ("RandomLlavaOnevision", "RandomLlavaOnevisionChat"),
    "pool_llava_onevision": ("PoolLlavaOnevision", "PoolLlavaOnevisionChat"),
    "visionzip_llava_onevision": ("VisionzipLlavaOnevision", "VisionzipLlavaOnevisionChat"),
}


def get_manifests():
    """ModelManifest objects for lmms-eval's registry (called by lmms-eval at import)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [
        ModelManifest(model_id=name, simple_class_path=f"{_MODULE}.{simple}", chat_class_path=f"{_MODULE}.{chat}")
        for name, (simple, chat) in MODELS.items()
    ]
