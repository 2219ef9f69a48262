"""Train the micro LLaVA's projector (LLaVA-style alignment; encoder and LLM frozen).

    python -m dymu_eval.offline.train            # what `make micro-train` runs
    python -m dymu_eval.offline.train --steps 20 --out /tmp/p   # a quick smoke run

Data: generated shape scenes (plain / busy / noisy backgrounds) with balanced yes/no questions
about existence, colour, count and position, one-word questions and captions; plus the bundled
photos (with flips and crops) with captions and existence questions. The frozen encoder's
features are computed once; the projector starts word-anchored (anchor.py: each patch fitted to
the word embeddings of what it shows, no LLM needed), then each step packs ~12 questions about
one image into one forward (see packing.py), training the projector and low-rank adapters.
Result: ``projector.safetensors`` (~10 MB) and ``training.json`` with the settings and the
accuracy on held-out generated POPE-style questions.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from dymu_eval.offline import synthetic
from dymu_eval.offline.packing import pack, packed_hidden
from dymu_eval.offline.photos import PHOTO_FACTS, sample_photos

SHORT_SUFFIX = "\nAnswer the question using a single word or phrase."
YES_NO_SUFFIX = " Please answer yes or no."
CAPTION_PROMPTS = ("Describe the image briefly.", "What is in this image?", "Write a short caption for the image.")


@dataclass
class TrainConfig:
    steps: int = 2000                # upper bound; the time budget below usually ends training first
    questions_per_image: int = 12
    lr: float = 1e-3
    warmup: int = 20
    weight_decay: float = 0.0
    lora_rank: int = 8               # low-rank adapters on the LLM's lora_targets (0 = projector only)
    lora_alpha: float = 16.0
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj,up_proj,down_proj"
    train_scenes: int = 600
    photo_variants: int = 2          # original and mirror (more: random crops)
    eval_scenes: int = 60
    eval_every_minutes: float = 5.0   # print held-out POPE-style accuracy this often (0 = only at the end)
    scene_size: int = 336            # as in the offline tasks' images (then JPEG, as they are stored)
    jpeg_quality: int = 85
    seed: int = 0
    threads: int = 2
    anchor_steps: int = 400          # word-anchored projector start (anchor.py) before training; 0 = off
    init: str = ""                   # continue from a projector/adapter file instead of a random projector
    max_train_minutes: float = 55.0  # the LR schedule runs on max(step, time) progress, so a slow
                                     # (shared) machine does fewer steps but still finishes its schedule


class LoRALinear(torch.nn.Module):
    """A frozen linear layer plus a trainable low-rank update ``scale * B @ A`` (B starts at zero)."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.base, self.scale = base, alpha / rank
        a = torch.randn(rank, base.in_features, generator=generator) / math.sqrt(base.in_features)
        self.A = torch.nn.Parameter(a)
        self.B = torch.nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.scale


def add_lora(language_model, cfg: "TrainConfig") -> dict[str, LoRALinear]:
    """Wrap the target linear layers of the LLM; returns them by module path (for saving)."""
    targets = tuple(t.strip() for t in cfg.lora_targets.split(",") if t.strip())
    g = torch.Generator().manual_seed(cfg.seed + 7)
    wrapped = {}
    for name, module in list(language_model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, torch.nn.Linear):
                lora = LoRALinear(child, cfg.lora_rank, cfg.lora_alpha, g)
                setattr(module, child_name, lora)
                wrapped[f"{name}.{child_name}" if name else child_name] = lora
    return wrapped


# -- data ------------------------------------------------------------------------------------

@dataclass
class Item:
    image: Image.Image
    facts: synthetic.Facts | None = None   # generated scene
    photo: str | None = None               # or a bundled photo's name


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def scene_items(first_seed: int, n: int, cfg: TrainConfig) -> list[Item]:
    """``n`` generated scenes; backgrounds cycle so each kind is equally common."""
    items = []
    for k in range(n):
        image, facts = synthetic.make_scene(first_seed + k, cfg.scene_size, synthetic.BACKGROUNDS[k % 3])
        items.append(Item(_jpeg(image, cfg.jpeg_quality), facts=facts))
    return items


def photo_items(cfg: TrainConfig, rng: random.Random) -> list[Item]:
    items = []
    for name, path in sample_photos(list(PHOTO_FACTS)).items():
        base = Image.open(path).convert("RGB")
        variants = [base, base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
        while len(variants) < cfg.photo_variants:
            w, h = base.size
            s = rng.uniform(0.7, 0.95)
            cw, ch = int(w * s), int(h * s)
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            variants.append(base.crop((x, y, x + cw, y + ch)))
        items += [Item(v, photo=name) for v in variants[: cfg.photo_variants]]
    return items


def _suffix(rng: random.Random, yes_no: bool) -> str:
    r = rng.random()
    if r < 0.7:
        return SHORT_SUFFIX
    return YES_NO_SUFFIX if yes_no and r < 0.85 else ""


def questions(item: Item, rng: random.Random, k: int) -> list[tuple[str, str]]:
    """``k`` (question, answer) pairs about one item: mostly balanced yes/no, some short answers, a caption."""
    out: list[tuple[str, str]] = [(rng.choice(CAPTION_PROMPTS), _caption(item))]
    if item.facts is not None:
        rest = k - 3  # after the caption and the POPE-style pair
        n_yes_no = 2 * (rest * 3 // 4 // 2)  # about three quarters, an even number: half Yes, half No
        yes_no = synthetic.yes_no_questions(item.facts, rng, n_yes_no)
        short = synthetic.short_questions(item.facts, rng)[: rest - n_yes_no]
        out += [(q, a) for q, a, _ in pope_questions(item, rng)]  # the target task's wording, balanced
        out += [(q.question + _suffix(rng, True), q.answer) for q in yes_no]
        out += [(q.question + _suffix(rng, False), q.answer) for q in short]
    else:
        _, present, absent = PHOTO_FACTS[item.photo]
        n = (k - 1) // 2
        pos = rng.sample(present, min(n, len(present)))
        neg = rng.sample(absent, min(n, len(absent)))
        for obj, ans in [(o, "Yes") for o in pos] + [(o, "No") for o in neg]:
            where = rng.choice(("in the image", "in this image", "in the picture"))
            out.append((f"Is there a {obj} {where}?" + _suffix(rng, True), ans))
    rng.shuffle(out)
    return out[:k]


def _caption(item: Item) -> str:
    return synthetic.caption(item.facts) if item.facts is not None else PHOTO_FACTS[item.photo][0]


def pope_questions(item: Item, rng: random.Random) -> list[tuple[str, str, str]]:
    """One present and one absent coloured shape, worded as in the offline POPE task."""
    facts = item.facts
    o = rng.choice(facts.objects)
    s, c = synthetic._absent_kind(facts, rng)
    return [(f"Is there a {o.colour} {o.shape} in the image?{SHORT_SUFFIX}", "Yes", "pope"),
            (f"Is there a {c} {s} in the image?{SHORT_SUFFIX}", "No", "pope")]


# -- model pieces ----------------------------------------------------------------------------

@torch.no_grad()
def encode(model, processor, images: list[Image.Image], desc: str) -> torch.Tensor:
    """Frozen tower features at LLaVA's feature layer, CLS dropped: (N, patches, D_vision)."""
    cfg = model.config
    feats = []
    for img in tqdm(images, desc=desc, unit="img"):
        pixels = processor.image_processor(img, return_tensors="pt")["pixel_values"]
        hidden = model.model.vision_tower(pixel_values=pixels, output_hidden_states=True).hidden_states
        feats.append(hidden[cfg.vision_feature_layer][0, 1:].clone())
    return torch.stack(feats)


def _branch_loss(model, feats: torch.Tensor, packed) -> torch.Tensor:
    embeds = model.model.multi_modal_projector(feats)
    hidden = packed_hidden(model.model.language_model, embeds, packed, model.config.image_token_id)
    logits = model.lm_head(hidden[packed.predict_at])
    per_token = F.cross_entropy(logits.float(), packed.targets, reduction="none")
    n_branches = int(packed.branch_of.max()) + 1
    sums = torch.zeros(n_branches).index_add(0, packed.branch_of, per_token)
    counts = torch.zeros(n_branches).index_add(0, packed.branch_of, torch.ones_like(per_token))
    return (sums / counts).mean()  # every question weighs the same, however long its answer


@torch.no_grad()
def yes_no_accuracy(model, tokenizer, feats: torch.Tensor, qa: list[list[tuple[str, str, str]]],
                    desc: str = "eval") -> dict:
    """Accuracy on (question, Yes|No, kind) triples per image, judged by the Yes vs No logit."""
    yes = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    no = tokenizer("No", add_special_tokens=False)["input_ids"][0]
    seq = model.config.image_seq_length
    tally: dict[str, list[int]] = {}  # kind -> [right, total, said yes]
    for f, triples in tqdm(list(zip(feats, qa)), desc=desc, unit="img"):
        packed = pack(tokenizer, [(q, a) for q, a, _ in triples], seq)
        embeds = model.model.multi_modal_projector(f)
        hidden = packed_hidden(model.model.language_model, embeds, packed, model.config.image_token_id)
        first = torch.stack([(packed.branch_of == k).nonzero()[0, 0] for k in range(len(triples))])
        logits = model.lm_head(hidden[packed.predict_at[first]])
        for (_, answer, kind), said_yes in zip(triples, (logits[:, yes] > logits[:, no]).tolist()):
            for key in (kind, "all"):
                t = tally.setdefault(key, [0, 0, 0])
                t[0] += said_yes == (answer == "Yes")
                t[1] += 1
                t[2] += said_yes
    summary = {k: {"accuracy": round(r / n, 4), "n": n, "yes_ratio": round(y / n, 4)} for k, (r, n, y) in tally.items()}
    out = dict(summary.pop("all"))
    out["by_kind"] = summary
    return out


def _load_init(path: Path, projector, loras: dict) -> None:
    """Start from earlier weights: the projector, and adapters whose names match this run's."""
    from dymu_eval.errors import ConfigError
    from dymu_eval.offline.micro_llava import LORA_PREFIX, PROJECTOR_PREFIX, read_adapters

    weights = read_adapters(path)
    projector.load_state_dict({k[len(PROJECTOR_PREFIX):]: v for k, v in weights.items()
                               if k.startswith(PROJECTOR_PREFIX)})
    with torch.no_grad():
        for name, m in loras.items():
            a, b = weights.get(f"{LORA_PREFIX}{name}.A"), weights.get(f"{LORA_PREFIX}{name}.B")
            if a is None or b is None or a.shape != m.A.shape:
                raise ConfigError(f"{path}: no adapter '{name}' of rank {m.A.shape[0]} to continue from")
            m.A.copy_(a)
            m.B.copy_(b / m.scale)


def _anchor(model, tok, projector, feats, items, eval_feats, eval_items, cfg: TrainConfig) -> dict:
    """Fit the projector to word embeddings of what each patch shows (see anchor.py)."""
    from dymu_eval.offline.anchor import anchor_targets, fit_projector, word_accuracy

    grid = int(round(math.sqrt(model.config.image_seq_length)))
    embeddings = model.model.language_model.get_input_embeddings().weight.detach()
    targets, kind = anchor_targets([i.facts for i in items], grid, embeddings, tok)
    loss = fit_projector(projector, feats, targets, kind, cfg.anchor_steps, seed=cfg.seed)
    held_targets, held_kind = anchor_targets([i.facts for i in eval_items], grid, embeddings, tok)
    result = {"steps": cfg.anchor_steps, "final_mse": round(loss, 5),
              "heldout_nearest_word": word_accuracy(projector, eval_feats, held_targets, held_kind)}
    tqdm.write(f"anchored projector: {result}")
    return result


# -- training --------------------------------------------------------------------------------

@dataclass
class _Data:
    """Training and held-out items with their encoded image features and held-out questions."""

    train_items: list[Item]
    train_feats: torch.Tensor
    eval_items: list[Item]
    eval_feats: torch.Tensor
    eval_qa: list[list[tuple[str, str, str]]]


@dataclass
class _Progress:
    """What the optimisation loop did."""

    steps_done: int = 0
    losses: list[float] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)  # held-out POPE-style accuracy every eval_every_minutes
    train_minutes: float = 0.0


def _frozen_model(cfg: TrainConfig):
    """The assembled micro LLaVA with everything frozen except the projector."""
    from dymu_eval.offline.micro_llava import assemble

    model, processor = assemble(adapters=None, seed=cfg.seed)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.model.multi_modal_projector.parameters():
        p.requires_grad_(True)
    return model, processor


def _data(model, processor, cfg: TrainConfig, rng: random.Random) -> _Data:
    train_items = scene_items(0, cfg.train_scenes, cfg) + photo_items(cfg, rng)
    eval_items = scene_items(1_000_000, cfg.eval_scenes, cfg)
    train_feats = encode(model, processor, [i.image for i in train_items], "encode train")
    eval_feats = encode(model, processor, [i.image for i in eval_items], "encode eval")
    eval_rng = random.Random(cfg.seed + 1)
    eval_qa = [pope_questions(i, eval_rng) + [(q.question + SHORT_SUFFIX, q.answer, q.kind)
                                              for q in synthetic.yes_no_questions(i.facts, eval_rng, 4)]
               for i in eval_items]
    return _Data(train_items, train_feats, eval_items, eval_feats, eval_qa)


def _optimise(model, tok, params: list, data: _Data, cfg: TrainConfig, rng: random.Random) -> _Progress:
    """AdamW with warm-up and a cosine schedule over max(step, time) progress; held-out checks
    every ``eval_every_minutes`` do not count as training time."""
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    done = _Progress()
    order: list[int] = []
    probe_feats = data.eval_feats[:20]
    probe_qa = [[t for t in triples if t[2] == "pope"] for triples in data.eval_qa[:20]]
    loop_start = time.time()
    next_eval = cfg.eval_every_minutes
    bar = tqdm(range(cfg.steps), desc="train", unit="step")
    for step in bar:
        if cfg.eval_every_minutes > 0 and (time.time() - loop_start) / 60 >= next_eval:
            paused = time.time()
            acc = yes_no_accuracy(model, tok, probe_feats, probe_qa, "eval")
            done.curve.append({"step": step, "minutes": round(next_eval, 1), "accuracy": acc["accuracy"],
                               "n": acc["n"]})
            bar.write(f"step {step}: held-out POPE-style accuracy {acc['accuracy']:.3f} (n={acc['n']})")
            loop_start += time.time() - paused
            next_eval += cfg.eval_every_minutes
        progress = max(step / cfg.steps, (time.time() - loop_start) / 60 / cfg.max_train_minutes)
        if progress >= 1:
            bar.write(f"stopping after {step} steps: the {cfg.max_train_minutes} min training budget is spent")
            break
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * progress))
        for group in optim.param_groups:
            group["lr"] = lr
        if not order:
            order = list(range(len(data.train_items)))
            rng.shuffle(order)
        idx = order.pop()
        packed = pack(tok, questions(data.train_items[idx], rng, cfg.questions_per_image),
                      model.config.image_seq_length)
        loss = _branch_loss(model, data.train_feats[idx], packed)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        done.losses.append(loss.item())
        done.steps_done = step + 1
        bar.set_postfix(loss=f"{sum(done.losses[-20:]) / len(done.losses[-20:]):.3f}", lr=f"{lr:.1e}")
    done.train_minutes = (time.time() - loop_start) / 60
    return done


def _save_weights(out_dir: Path, projector, loras: dict[str, LoRALinear]) -> None:
    from safetensors.torch import save_file

    from dymu_eval.offline.micro_llava import LORA_PREFIX, PROJECTOR_PREFIX

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {f"{PROJECTOR_PREFIX}{k}": v.detach().contiguous() for k, v in projector.state_dict().items()}
    for name, m in loras.items():  # saved so that folding is W += B @ A
        weights[f"{LORA_PREFIX}{name}.A"] = m.A.detach().contiguous()
        weights[f"{LORA_PREFIX}{name}.B"] = (m.B.detach() * m.scale).contiguous()
    save_file(weights, str(out_dir / "projector.safetensors"), metadata={"format": "pt"})


def _report(cfg: TrainConfig, data: _Data, done: _Progress, scores: dict, anchor: dict, started: float) -> dict:
    """training.json: settings, losses, held-out accuracy, and what an ``init`` run continued from."""
    losses = done.losses
    report = {
        "settings": asdict(cfg),
        "steps_done": done.steps_done,
        "train_items": {"scenes": cfg.train_scenes, "photo_variants": len(data.train_items) - cfg.train_scenes},
        "loss_first20": sum(losses[:20]) / max(1, len(losses[:20])),
        "loss_last20": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "heldout_pope_style": scores["by_kind"]["pope"],
        "heldout_yes_no_all": {k: v for k, v in scores.items() if k != "by_kind"},
        "heldout_by_kind": scores["by_kind"],
        "heldout_pope_curve": done.curve,
        "anchor": anchor,
        "train_minutes": round(done.train_minutes, 2),
        "total_minutes": round((time.time() - started) / 60, 2),
        "torch_threads": torch.get_num_threads(),
    }
    earlier = Path(cfg.init).with_name("training.json") if cfg.init else None
    if earlier is not None and earlier.is_file():
        before = json.loads(earlier.read_text())
        report["continued_from"] = {k: before.get(k) for k in ("steps_done", "settings", "continued_from")}
        report["steps_total"] = done.steps_done + before.get("steps_total", before.get("steps_done", 0))
    return report


def train(cfg: TrainConfig, out_dir: Path) -> dict:
    """Train, evaluate, and write ``projector.safetensors`` + ``training.json`` into ``out_dir``."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    started = time.time()
    model, processor = _frozen_model(cfg)
    tok = processor.tokenizer
    projector = model.model.multi_modal_projector
    data = _data(model, processor, cfg, rng)
    anchor = {}
    if cfg.anchor_steps > 0 and not cfg.init:
        n = cfg.train_scenes
        anchor = _anchor(model, tok, projector, data.train_feats[:n], data.train_items[:n], data.eval_feats,
                         data.eval_items, cfg)
    loras = add_lora(model.model.language_model, cfg) if cfg.lora_rank > 0 else {}
    if cfg.init:
        _load_init(Path(cfg.init), projector, loras)
    params = list(projector.parameters()) + [p for m in loras.values() for p in (m.A, m.B)]
    done = _optimise(model, tok, params, data, cfg, rng)
    with torch.no_grad():
        scores = yes_no_accuracy(model, tok, data.eval_feats, data.eval_qa, "eval held-out")
    _save_weights(out_dir, projector, loras)
    report = _report(cfg, data, done, scores, anchor, started)
    (out_dir / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def default_out_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "micro_llava"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=default_out_dir(), help="folder for projector.safetensors")
    for name, value in asdict(TrainConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig())})
    report = train(cfg, args.out)
    print(json.dumps({k: report[k] for k in ("steps_done", "heldout_pope_style", "heldout_by_kind",
                                             "train_minutes", "total_minutes")}, indent=1))
    print(f"wrote {args.out / 'projector.safetensors'} and {args.out / 'training.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
