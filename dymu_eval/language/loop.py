"""The prefill/decode loop over a Hugging Face base text decoder, driven by a virtual layout.

HF ``generate`` assumes one hidden row per position; with VTU a row stands for several
positions, so this module runs the decoder layers itself: prefill over the unique rows (with a
pruner's cuts, ``language.pruning``, if asked), then one new row per sample per step. Only unique
rows enter the KV cache (a standard DynamicCache), so its size follows the unique length.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import DynamicCache

from ..errors import ConfigError
from .attention import use_dymu_attention
from .families import DecoderInfo, describe_decoder
from .layout import VirtualLayout, mix_rows
from .pruning import (
    CutView,
    Pruning,
    Selection,
    Stage,
    drop_entries,
    insert_entries,
    mask_entries,
    renumber_contiguous,
    visual_rows,
)
from .sampling import DecodeConfig, choose_next, find_stop
from .state import ForwardState, Segment, Side, identity_rope, rotary_at

__all__ = ["Decoding", "GenerationOutput", "Prefill", "Timing", "generate", "loglikelihood", "prefill",
           "prefill_logits"]


@dataclass
class Timing:
    """Wall-clock milliseconds of the batch this sample ran in (samples of a batch run together)."""

    prefill_ms: float
    decode_ms: float
    new_tokens: int


@dataclass
class GenerationOutput:
    sequences: list[list[int]]  # generated ids per sample (eos included when produced, like HF generate)
    texts: list[str] | None  # decoded without special tokens, cut before the first stop string
    finish_reasons: list[str]  # "eos" | "stop" | "length"
    timings: list[Timing]
    unique_lengths: list[int]  # rows the decoder processed per sample
    virtual_lengths: list[int]  # length of the unmodified sequence per sample
    kept_image_tokens: list[int] | None  # image entries after the last cut of a pruner, else None
    scores: list[torch.Tensor] | None = None  # (B, V) logits of each step, when asked for
    stages: list[Stage] | None = None  # a pruner's cuts: what remained after each


@dataclass
class Prefill:
    """Result of a prefill: normed final rows, the layout of the last layers, and its map to the input layout."""

    hidden: torch.Tensor  # (B, Nu_final, D) after the final norm
    layout: VirtualLayout  # layout of the last layers (shorter after a pruner's drop)
    origin: torch.Tensor  # (B, Nv_final) index of each entry in the input layout
    state: ForwardState
    kept_image_tokens: list[int] | None


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _check_inputs(decoder: nn.Module, unique_embeds: torch.Tensor, layout: VirtualLayout) -> DecoderInfo:
    info = describe_decoder(decoder)
    if not isinstance(layout, VirtualLayout):
        raise ConfigError(f"layout must be a VirtualLayout, got {type(layout).__name__}")
    if unique_embeds.dim() != 3 or not unique_embeds.is_floating_point():
        raise ConfigError(f"unique_embeds must be a float (B, Nu, D) tensor, got {unique_embeds.dtype} "
                          f"{tuple(unique_embeds.shape)}")
    if unique_embeds.shape[0] != layout.batch_size:
        raise ConfigError(f"unique_embeds has {unique_embeds.shape[0]} samples but the layout has "
                          f"{layout.batch_size}")
    if unique_embeds.shape[1] != layout.unique_len:
        raise ConfigError(f"unique_embeds has {unique_embeds.shape[1]} rows per sample but the layout expects "
                          f"{layout.unique_len} unique rows (layout and sequence lengths disagree)")
    if unique_embeds.shape[2] != decoder.config.hidden_size:
        raise ConfigError(f"unique_embeds has width {unique_embeds.shape[2]} but the decoder's hidden size is "
                          f"{decoder.config.hidden_size}")
    return info


def _run_layer(layer: nn.Module, info: DecoderInfo, h: torch.Tensor, pe, cache, state: ForwardState) -> torch.Tensor:
    out = layer(h, attention_mask=None, position_embeddings=pe, use_cache=cache is not None,
                dymu_state=state, **{info.cache_kwarg: cache})
    return out[0] if isinstance(out, tuple) else out


def prefill(decoder: nn.Module, unique_embeds: torch.Tensor, layout: VirtualLayout, pruning: Pruning | None = None,
            cache: DynamicCache | None = None) -> Prefill:
    """Run every decoder layer over the unique rows; ``cache`` (optional) receives unique rows only.
    ``pruning`` cuts image entries at its pruner's layers (its ``stages`` are filled in)."""
    with torch.no_grad(), use_dymu_attention(decoder):
        return _prefill(decoder, unique_embeds, layout, pruning, cache)


def _prefill(decoder: nn.Module, unique_embeds: torch.Tensor, layout: VirtualLayout, pruning: Pruning | None,
             cache: DynamicCache | None) -> Prefill:
    info = _check_inputs(decoder, unique_embeds, layout)
    layout = layout.to(unique_embeds.device)
    cuts = []
    if pruning is not None:
        pruning.check(layout, info.num_layers)
        cuts = pruning.pruner.cuts()
        pruning.stages = []
    h = unique_embeds
    pe = identity_rope(h, info.head_dim)
    side = Side.from_layout(layout, decoder.rotary_emb, h)
    state = ForwardState([Segment(range(info.num_layers), side, side, side.identity)],
                         record={c.layer - 1: frozenset(c.needs) for c in cuts if c.needs})
    origin = torch.arange(layout.virtual_len, device=h.device).expand(layout.batch_size, -1)
    image = pruning.image_mask.to(h.device) if pruning is not None else None
    initial = (image & layout.valid).sum(1) if image is not None else None
    at = {c.layer: (i, c) for i, c in enumerate(cuts)}
    memo: dict = {}  # the pruner's own, across the cuts of this prefill
    for i, layer in enumerate(decoder.layers):
        if i in at:
            layout, image, h, origin = _cut(decoder, pruning, *at[i], layout, image, h, origin, state, initial,
                                            unique_embeds, memo)
            side = Side.from_layout(layout, decoder.rotary_emb, h)
            last = state.segments[-1]
            state.segments[-1] = Segment(range(last.layers.start, i), last.q, last.kv, last.prerotated)
            state.segments.append(Segment(range(i, info.num_layers), side, side, side.identity))
        h = _run_layer(layer, info, h, state.segment(i).rope(pe), cache, state)
    state.record, state.recorded = {}, {}
    kept = pruning.kept_image_tokens if pruning is not None else None
    return Prefill(decoder.norm(h), layout, origin, state, kept)


def _cut(decoder: nn.Module, pruning: Pruning, index: int, cut, layout: VirtualLayout, image: torch.Tensor,
         h: torch.Tensor, origin: torch.Tensor, state: ForwardState, initial: torch.Tensor, inputs: torch.Tensor,
         memo: dict):
    """One cut: the pruner chooses, then the other image entries are dropped (or masked) and the
    rows it adds, if any, are inserted after the image entries."""
    view = CutView(cut, index, layout, image, h, state.recorded.pop(cut.layer - 1, {}), decoder, initial,
                   inputs, origin, memo)
    chosen = pruning.pruner.select(view)
    spent = [float(f) for f in pruning.pruner.score_flops(view)]
    added = None
    if isinstance(chosen, Selection):
        chosen, added = chosen.keep, chosen.inserted
        _check_inserted(pruning, cut, added, h)
    ar = torch.arange(layout.virtual_len, device=h.device)
    last_image = torch.where(image & layout.valid, ar, -1).amax(1)  # the inserted rows follow it
    if not isinstance(chosen, torch.Tensor) or chosen.dtype != torch.bool or chosen.shape != layout.valid.shape:
        raise ConfigError(f"{type(pruning.pruner).__name__}.select must return a bool tensor of shape "
                          f"{tuple(layout.valid.shape)}, got {getattr(chosen, 'dtype', type(chosen).__name__)} "
                          f"{tuple(getattr(chosen, 'shape', ()))}")
    keep = layout.valid & (chosen | ~image)
    if pruning.mode == "drop":
        layout, rows, new_origin = drop_entries(layout, keep)
        h = torch.gather(h, 1, rows.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        image = torch.gather(image, 1, new_origin) & layout.valid
        origin = torch.gather(origin, 1, new_origin)
    else:
        layout, new_origin = mask_entries(layout, keep), ar.expand(layout.batch_size, -1)
    if added is not None and any(r.shape[0] for r in added):
        ar_new = torch.arange(layout.virtual_len, device=h.device)
        after = torch.where((new_origin <= last_image[:, None]) & layout.valid, ar_new, -1).amax(1)
        layout, h, source = insert_entries(layout, h, after, added)
        new = source < 0  # inserted rows and the padding that makes room for them
        image = torch.where(new, layout.valid, torch.gather(image, 1, source.clamp_min(0)))
        origin = torch.where(new, -1, torch.gather(origin, 1, source.clamp_min(0)))
    if cut.positions == "contiguous":
        layout = renumber_contiguous(layout)
    kept = image & layout.valid
    n_added = [r.shape[0] for r in added] if added is not None else []
    pruning.stages.append(Stage(cut.layer, kept.sum(1).tolist(), visual_rows(layout, image), spent, n_added))
    return layout, image, h, origin


def _check_inserted(pruning: Pruning, cut, added: list[torch.Tensor], h: torch.Tensor) -> None:
    name = type(pruning.pruner).__name__
    if len(added) != h.shape[0] or any(r.dim() != 2 or r.shape[1] != h.shape[-1] for r in added):
        raise ConfigError(f"{name}.select: inserted rows must be one (n, {h.shape[-1]}) tensor per sample")
    if cut.positions != "contiguous" and any(r.shape[0] for r in added):
        raise ConfigError(f"{name}: a cut that inserts rows must renumber positions contiguously (layer {cut.layer})")


def _virtual_logits(lm_head: nn.Module, run: Prefill, entries: torch.Tensor) -> torch.Tensor:
    """Logits (B, M, V) at final-layout entries (B, M): each entry mixes its unique rows' final states."""
    lay = run.layout
    idx = torch.gather(lay.index, 1, entries.unsqueeze(-1).expand(-1, -1, lay.index.shape[2]))
    w = torch.gather(lay.weight, 1, entries.unsqueeze(-1).expand(-1, -1, lay.weight.shape[2]))
    return lm_head(mix_rows(run.hidden, idx, w))


def prefill_logits(decoder: nn.Module, lm_head: nn.Module, unique_embeds: torch.Tensor, layout: VirtualLayout,
                   pruning: Pruning | None = None) -> torch.Tensor:
    """Logits (B, Nv, V) at every virtual entry of ``layout``; entries a pruner dropped are NaN."""
    with torch.no_grad(), use_dymu_attention(decoder):
        run = prefill(decoder, unique_embeds, layout, pruning)
        nv_final = run.layout.virtual_len
        entries = torch.arange(nv_final, device=run.hidden.device).expand(layout.batch_size, -1)
        logits = _virtual_logits(lm_head, run, entries)
        if pruning is None or (pruning.mode == "mask" and nv_final == layout.virtual_len):
            return logits
        if pruning.mode == "mask":  # rows were inserted: the input entries, masked ones included
            return torch.stack([logits[b, run.origin[b] >= 0] for b in range(layout.batch_size)])
        out = logits.new_full((layout.batch_size, layout.virtual_len, logits.shape[-1]), float("nan"))
        for b in range(layout.batch_size):
            v = run.layout.valid[b] & (run.origin[b] >= 0)  # inserted rows have no input entry
            out[b, run.origin[b, v]] = logits[b, v]
        return out


def _require_left_padded(layout: VirtualLayout, what: str) -> None:
    bad = ~layout.valid[:, -1]
    if bool(bad.any()):
        raise ConfigError(f"{what}: sample {int(bad.nonzero()[0, 0])} ends in padding; layouts must be left padded "
                          "(build them with VirtualLayout.identity/from_mappings)")


def _next_positions(layout: VirtualLayout) -> torch.Tensor:
    return torch.where(layout.valid, layout.positions, -1).amax(1) + 1


def _segment_positions(state: ForwardState) -> tuple[list[torch.Tensor], list[int]]:
    """The distinct next positions (B,) over segments, and which one each segment continues from
    (a contiguous cut renumbers the layers after it; otherwise every segment shares one)."""
    distinct, slot = [], []
    for seg in state.segments:
        nxt = torch.where(seg.kv.valid, seg.kv.positions, -1).amax(1) + 1
        same = next((i for i, p in enumerate(distinct) if torch.equal(p, nxt)), None)
        if same is None:
            distinct.append(nxt)
            same = len(distinct) - 1
        slot.append(same)
    return distinct, slot


def _decode_state(decoder: nn.Module, state: ForwardState, positions: list[torch.Tensor], slot: list[int],
                  like: torch.Tensor) -> ForwardState:
    """Every segment's key side grows by one entry at its next position; the query side is the new row alone."""
    rotations = [rotary_at(decoder.rotary_emb, like, pos[:, None]) for pos in positions]
    segments = []
    for seg, i in zip(state.segments, slot):
        (cos, sin), pos = rotations[i], positions[i]
        segments.append(Segment(seg.layers, Side.single(pos, cos, sin), seg.kv.append(pos, cos, sin), seg.prerotated))
    return ForwardState(segments)


class Decoding:
    """One generation, a step at a time. The prefill runs on construction; each ``step()`` picks
    every sample's next token and, unless the generation ends there, runs the decoder on it.
    ``generate`` drives one to the end; a benchmark can drive several in lockstep, because each call
    routes the attention itself and leaves the decoder as it found it between calls."""

    def __init__(self, decoder: nn.Module, lm_head: nn.Module, unique_embeds: torch.Tensor, layout: VirtualLayout,
                 config: DecodeConfig, pruning: Pruning | None = None, return_scores: bool = False):
        config.check()
        self.info = _check_inputs(decoder, unique_embeds, layout)
        _require_left_padded(layout, "generate")
        self.decoder, self.lm_head, self.config, self.pruning = decoder, lm_head, config, pruning
        self.device = device = unique_embeds.device
        self.layout = layout = layout.to(device)
        b_size = layout.batch_size
        self.eos = torch.tensor(sorted({int(t) for t in config.eos_token_ids}), dtype=torch.long, device=device)
        self.pad_id = config.pad_token_id if config.pad_token_id is not None else (
            int(self.eos[0]) if self.eos.numel() else 0)
        self.gens = config.generators(b_size, device)
        self.seqs: list[list[int]] = [[] for _ in range(b_size)]
        self.reasons = ["length"] * b_size
        self.done = torch.zeros(b_size, dtype=torch.bool, device=device)
        self.scores: list[torch.Tensor] | None = [] if return_scores else None
        with torch.no_grad(), use_dymu_attention(decoder):
            start = _now(device)
            self.cache = DynamicCache(config=decoder.config)
            self.run = prefill(decoder, unique_embeds, layout, pruning, self.cache)
            last = torch.full((b_size, 1), self.run.layout.virtual_len - 1, dtype=torch.long, device=device)
            self.logits = _virtual_logits(lm_head, self.run, last)[:, 0]
            self.state = self.run.state
            self.positions, self.slot = _segment_positions(self.state)
            self.pe = identity_rope(unique_embeds, self.info.head_dim)
            self.prefill_ms = (_now(device) - start) * 1e3
        self.decode_ms = 0.0
        self.steps_taken = 0
        self.finished = config.max_new_tokens == 0

    def step(self) -> bool:
        """Pick the next tokens and, unless that ends the generation, run the decoder on them.
        True while there is another step to take."""
        if self.finished:
            return False
        start = _now(self.device)
        with torch.no_grad(), use_dymu_attention(self.decoder):
            self._step()
        self.decode_ms += (_now(self.device) - start) * 1e3
        return not self.finished

    def _step(self) -> None:
        config, done = self.config, self.done
        if self.scores is not None:
            self.scores.append(self.logits.to(torch.promote_types(self.logits.dtype, torch.float32)).clone())
        ids = choose_next(self.logits, config, self.gens)
        ids = torch.where(done, torch.full_like(ids, self.pad_id), ids)
        for b in (~done).nonzero()[:, 0].tolist():
            self.seqs[b].append(int(ids[b]))
        if self.eos.numel():
            hit = torch.isin(ids, self.eos) & ~done
            for b in hit.nonzero()[:, 0].tolist():
                self.reasons[b] = "eos"
            done |= hit
        if config.stop_strings:
            for b in (~done).nonzero()[:, 0].tolist():
                text = config.tokenizer.decode(self.seqs[b], skip_special_tokens=True)
                if find_stop(text, config.stop_strings) >= 0:
                    self.reasons[b], done[b] = "stop", True
        self.steps_taken += 1
        if bool(done.all()) or self.steps_taken == config.max_new_tokens:
            self.finished = True
            return
        decoder = self.decoder
        h = decoder.embed_tokens(ids[:, None])
        self.state = _decode_state(decoder, self.state, self.positions, self.slot, h)
        for i, layer in enumerate(decoder.layers):
            h = _run_layer(layer, self.info, h, self.state.segment(i).rope(self.pe), self.cache, self.state)
        self.logits = self.lm_head(decoder.norm(h)[:, -1])
        self.positions = [p + 1 for p in self.positions]

    def output(self) -> GenerationOutput:
        """What was generated so far, with the texts cut before the first stop string."""
        texts = None
        if self.config.tokenizer is not None:
            texts = []
            for seq in self.seqs:
                text = self.config.tokenizer.decode(seq, skip_special_tokens=True)
                cut = find_stop(text, self.config.stop_strings)
                texts.append(text if cut < 0 else text[:cut])
        run, layout = self.run, self.layout
        return GenerationOutput(self.seqs, texts, self.reasons,
                                [Timing(self.prefill_ms, self.decode_ms, len(s)) for s in self.seqs],
                                layout.unique_lengths, layout.virtual_lengths, run.kept_image_tokens, self.scores,
                                self.pruning.stages if self.pruning is not None else None)


def generate(decoder: nn.Module, lm_head: nn.Module, unique_embeds: torch.Tensor, layout: VirtualLayout,
             config: DecodeConfig, pruning: Pruning | None = None, progress: bool = False,
             return_scores: bool = False) -> GenerationOutput:
    """Greedy or sampled generation for a left-padded batch described by ``layout``."""
    run = Decoding(decoder, lm_head, unique_embeds, layout, config, pruning, return_scores)
    with tqdm(total=config.max_new_tokens, desc="decode", disable=not progress, leave=False) as bar:
        while run.step():
            bar.update()
    return run.output()


def append_tokens(decoder: nn.Module, unique_embeds: torch.Tensor, layout: VirtualLayout,
                  tokens: Sequence[Sequence[int]]) -> tuple[torch.Tensor, VirtualLayout]:
    """Append text tokens (one-hot, next positions, right padded) to a left-padded layout."""
    b_size, _, k = layout.index.shape
    device = unique_embeds.device
    lengths = [len(t) for t in tokens]
    if len(tokens) != b_size:
        raise ConfigError(f"{len(tokens)} continuations for {b_size} samples")
    for b, n in enumerate(lengths):
        if n == 0:
            raise ConfigError(f"continuation of sample {b} is empty")
    lc, nu = max(lengths), layout.unique_len
    ids = torch.zeros(b_size, lc, dtype=torch.long, device=device)
    for b, t in enumerate(tokens):
        ids[b, : len(t)] = torch.as_tensor(list(t), dtype=torch.long, device=device)
    filled = torch.arange(lc, device=device)[None] < torch.tensor(lengths, device=device)[:, None]
    rows = torch.cat([unique_embeds, decoder.embed_tokens(ids).to(unique_embeds.dtype)], 1)
    new_index = (nu + torch.arange(lc, device=device)).view(1, lc, 1).expand(b_size, lc, k)
    new_weight = torch.zeros(b_size, lc, k, dtype=layout.weight.dtype, device=device)
    new_weight[:, :, 0] = 1
    new_pos = _next_positions(layout)[:, None] + torch.arange(lc, device=device)[None]
    grown = VirtualLayout(torch.cat([layout.index, new_index], 1), torch.cat([layout.weight, new_weight], 1),
                          torch.cat([layout.positions, new_pos], 1), torch.cat([layout.valid, filled], 1),
                          torch.cat([layout.unique_valid, filled], 1))
    return rows, grown


def loglikelihood(decoder: nn.Module, lm_head: nn.Module, unique_embeds: torch.Tensor, layout: VirtualLayout,
                  continuations: Sequence[Sequence[int]], pruning: Pruning | None = None) -> list[tuple[float, bool]]:
    """Per sample: (sum of log-probs of the continuation tokens after the context, whether greedy picks them all).
    With ``pruning``, its ``stages`` are filled in."""
    _check_inputs(decoder, unique_embeds, layout)
    _require_left_padded(layout, "loglikelihood")
    layout = layout.to(unique_embeds.device)
    nv = layout.virtual_len
    with torch.no_grad(), use_dymu_attention(decoder):
        rows, grown = append_tokens(decoder, unique_embeds, layout, continuations)
        grown_pruning = pruning.extended(grown.virtual_len - nv) if pruning is not None else None
        run = prefill(decoder, rows, grown, grown_pruning)
        if pruning is not None:
            pruning.stages = grown_pruning.stages
        lc = max(len(c) for c in continuations)
        entries = torch.zeros(layout.batch_size, lc, dtype=torch.long, device=rows.device)
        for b, cont in enumerate(continuations):
            # final-layout entries holding input entries nv-1 .. nv+len-2 (they predict the continuation)
            where = torch.full((grown.virtual_len,), -1, dtype=torch.long, device=rows.device)
            v = run.layout.valid[b] & (run.origin[b] >= 0)
            where[run.origin[b, v]] = v.nonzero()[:, 0]
            found = where[nv - 1: nv - 1 + len(cont)]
            if bool((found < 0).any()):
                raise ConfigError(f"loglikelihood, sample {b}: the last context entry was dropped by the pruner")
            entries[b, : len(cont)] = found
        all_logits = _virtual_logits(lm_head, run, entries)
        all_logits = all_logits.to(torch.promote_types(all_logits.dtype, torch.float32))  # fp32 or wider
        results = []
        for b, cont in enumerate(continuations):
            logits = all_logits[b, : len(cont)]
            target = torch.as_tensor(list(cont), dtype=torch.long, device=logits.device)
            logp = torch.log_softmax(logits, -1).gather(1, target[:, None]).sum()
            results.append((float(logp), bool((logits.argmax(-1) == target).all())))
    return results
