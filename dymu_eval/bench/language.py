"""`dymu-eval bench language`: VTU and FastV in the decoder against the full sequence, side by side.

A LLaVA-1.5-shaped request (576 virtual image tokens between ~35 system and ~5 question tokens)
runs through SmolLM2-135M (real weights; ``--random`` uses random weights of the same shape).
Variants are timed interleaved (each repeat runs all of them in a rotating order); a time is the
median over repeats, a time ratio the median of the ratios within each repeat. The variants: the
plain HF forward, the loop with the identity layout (the unmodified model),
VTU with ``--unique-image`` unique image rows, the "w/o VTU" ablation, FastV (K, kept fraction),
and HF's own forward over the unique rows alone (the control: what the device gives at that size).
Also reported: KV-cache bytes (VTU vs full, which must equal unique/virtual length) and the
per-token decode time, the decoders stepped in lockstep (a token of each in turn). Every
LLM-side pruner of the method registry (a method that ``needs`` "prune": FastV, PDrop, DART) is
timed too, at its default settings or ``--method-arg``'s
(a method whose settings do not fit the decoder's depth is listed as skipped, with the reason).
``--shape llava-1.5-7b|onevision-qwen2-7b --layers N``: random (seeded) weights at that decoder's
widths, N layers. ``--device cuda --dtype bfloat16`` times with CUDA events and reports peak memory.
"""
from __future__ import annotations

import argparse
import statistics

from ..commands.options import write_json
from . import add_shape_options, add_timing_options, check_timing_options, prepacked
from ._timing import PeakMemory, device_sync, interleaved, lockstep, paired_ratios
from .shapes import LANGUAGE_SHAPES

SMOLLM2_SHAPE = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                     "intermediate_size": 1536, "vocab_size": 49152, "rope_parameters": {"rope_type": "default",
                                                                                "rope_theta": 100000.0},
                     "max_position_embeddings": 8192, "tie_word_embeddings": True}
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the human's questions. USER:")
QUESTION = " What is shown in this image? ASSISTANT:"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("language", help="VTU / FastV prefill, KV cache and decode vs the full sequence (SmolLM2)")
    p.add_argument("--random", action="store_true", help="random weights of SmolLM2-135M's shape (no asset)")
    p.add_argument("--image-tokens", type=int, default=576)
    p.add_argument("--unique-image", type=int, default=90, help="unique image rows for VTU")
    p.add_argument("--fastv-k", type=int, default=2)
    p.add_argument("--fastv-keep", type=float, default=0.25, help="fraction of image tokens FastV keeps")
    p.add_argument("--new-tokens", type=int, default=32, help="decoded tokens for the per-token time")
    p.add_argument("--prune", action="append", metavar="METHOD",
                   help="an LLM-side pruner of the method registry to time (repeatable; default: all of them)")
    p.add_argument("--method-arg", action="append", default=[], metavar="NAME=VALUE",
                   help="a model_arg for the pruners that take it, e.g. pdrop_layers=1/2/3 (repeatable)")
    add_shape_options(p, LANGUAGE_SHAPES)
    add_timing_options(p)
    p.set_defaults(func=run)


def _load(args):
    """(causal LM on the device in the dtype, tokenizer or None, label)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .shapes import random_model, shape_config, torch_dtype

    if args.shape:
        cfg = shape_config(args.shape, LANGUAGE_SHAPES, args.layers)
        model = random_model(cfg, "AutoModelForCausalLM", args.seed, args.device, args.dtype)
        return model, None, f"{args.shape} shape, {cfg['num_hidden_layers']} layers, random weights (seed {args.seed})"
    if args.random:
        torch.manual_seed(args.seed)
        model, tok, label = LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)).eval(), None, \
            "SmolLM2-135M shape, random weights"
    else:
        from ..offline.assets import smollm2

        model, tok = smollm2()
        label = "SmolLM2-135M-Instruct (real weights)"
    return model.to(device=args.device, dtype=torch_dtype(args.dtype)), tok, label


def _request(model, tok, args):
    """(full embeddings (1, N, D), VTU rows and layout, image mask) for one LLaVA-shaped request."""
    import torch

    from ..language import VirtualLayout

    g = torch.Generator().manual_seed(args.seed)
    vocab = model.config.vocab_size
    if tok is not None:
        pre, post = tok(SYSTEM)["input_ids"], tok(QUESTION)["input_ids"]
    else:
        pre, post = torch.randint(0, vocab, (35,), generator=g).tolist(), torch.randint(0, vocab, (6,), generator=g)
        post = post.tolist()
    emb = model.get_input_embeddings()
    dev = emb.weight.device  # ids are drawn on the CPU (same draws on every device), embedded where the model is
    with torch.no_grad():
        text_pre, text_post = emb(torch.tensor(pre, device=dev)), emb(torch.tensor(post, device=dev))
        unique_img = emb(torch.randint(0, vocab, (args.unique_image,), generator=g).to(dev))
    # merged regions: each virtual image token belongs to one of the unique rows, every row used
    owner = torch.sort(torch.cat([torch.arange(args.unique_image),
                                  torch.randint(0, args.unique_image, (args.image_tokens - args.unique_image,),
                                                generator=g)])).values
    n_pre, n_post, n_img = len(pre), len(post), args.image_tokens
    rows = torch.cat([text_pre, unique_img, text_post])[None]
    mapping = torch.cat([torch.arange(n_pre), n_pre + owner, n_pre + args.unique_image + torch.arange(n_post)])
    layout = VirtualLayout.from_mappings([mapping], [rows.shape[1]], device=dev)
    full = layout.expand(rows)
    image = torch.zeros(1, full.shape[1], dtype=torch.bool, device=dev)
    image[0, n_pre: n_pre + n_img] = True
    return full, rows, layout, image, n_pre + n_post


def _flop_ratios(config, keys: list[str], n_text: int, args, n_unique_image: int) -> dict[str, float]:
    """Analytic prefill FLOPs of each variant over the full sequence's (same order as ``keys``)."""
    from ..accounting import CutCount, TransformerShape, prefill_flops, prefill_plan

    shape = TransformerShape.from_config(config)
    n_img, kept = args.image_tokens, round(args.image_tokens * args.fastv_keep)
    fastv = [CutCount(args.fastv_k, kept, kept, True)]
    runs = [(prefill_plan(shape.layers, n_text, n_img, n_img, True), ()),
            (prefill_plan(shape.layers, n_text, n_img, n_img, True), ()),
            (prefill_plan(shape.layers, n_text, n_unique_image, n_img, True), ()),
            (prefill_plan(shape.layers, n_text, n_unique_image, n_img, False), ()),
            (prefill_plan(shape.layers, n_text, n_img, n_img, False, fastv), fastv),
            (prefill_plan(shape.layers, n_text, n_unique_image, n_img, False), ())]
    flops = [prefill_flops(shape, plan, 1, cuts).total for plan, cuts in runs]
    return {k: f / flops[0] for k, f in zip(keys, flops)}


def _cache_bytes(cache) -> int:
    return sum(layer.keys.numel() * layer.keys.element_size() + layer.values.numel() * layer.values.element_size()
               for layer in cache.layers)


def _check(args: argparse.Namespace) -> None:
    from ..errors import ConfigError

    for name in ("image_tokens", "unique_image", "fastv_k"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    if args.new_tokens < 2:
        raise ConfigError("--new-tokens must be at least 2: the first token comes from the prefill, the per-token "
                          "time from the decode steps after it")
    if not 0 < args.unique_image <= args.image_tokens:
        raise ConfigError("--unique-image must be in 1..--image-tokens")
    if not 0 < args.fastv_keep <= 1:
        raise ConfigError("--fastv-keep must be in (0, 1]")
    if args.shape and args.random:
        raise ConfigError("--shape and --random: give one (--shape already means random weights)")
    if args.layers is not None and not args.shape:
        raise ConfigError("--layers needs --shape (it sets the depth of the random-weight decoder)")
    check_timing_options(args)
    args.pruners = _pruner_specs(args.prune, args.method_arg)


def _pruner_specs(names: list[str] | None, method_args: list[str]) -> dict[str, dict[str, str]]:
    """method -> its raw model_args from ``--method-arg``, for every LLM-side pruner asked for
    (default: every registered method that needs "prune")."""
    from ..errors import ConfigError
    from ..methods import METHODS

    pruners = [m for m in METHODS if "prune" in METHODS[m].needs]
    given: dict[str, str] = {}
    for item in method_args:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--method-arg {item}: write NAME=VALUE (e.g. fastv_k=1)")
        if not any(name in METHODS[m].args for m in pruners):
            raise ConfigError(f"--method-arg {name}: no LLM-side pruner ({', '.join(pruners)}) takes it")
        given[name] = value
    for m in names or []:
        if m not in pruners:
            raise ConfigError(f"--prune {m}: not an LLM-side pruner of the method registry (choose from "
                              f"{', '.join(pruners)})")
    return {m: {k: v for k, v in given.items() if k in METHODS[m].args} for m in (names or pruners)}


def _registry_pruners(model, args) -> tuple[dict, dict[str, str], dict[str, str]]:
    """(variant name -> pruner, method -> why it was skipped, variant name -> method), built through
    the method registry."""
    from ..errors import ConfigError
    from ..methods import METHODS
    from ..methods.settings import resolve_method_args
    from ..vlm.reduction import BuildContext, build_reduction

    context = BuildContext(model, None, [], "per_image", model.config.num_hidden_layers, frozenset({"prune"}))
    built, skipped, owners = {}, {}, {}
    for method, given in args.pruners.items():
        spec = METHODS[method]
        try:
            reduction = build_reduction(method, resolve_method_args(method, given), context)
        except ConfigError as exc:
            skipped[method] = str(exc)
            continue
        raw = {k: str(given.get(k, a.default)) for k, a in spec.args.items()}
        variant = f"{spec.label} {spec.amount(raw) if spec.amount else ''}".strip()
        built[variant], owners[variant] = reduction.pruner, method
    return built, skipped, owners


def _prefills(dec, head, full, rows, layout, image, args, pruners: dict) -> dict:
    """Prefill variants: the HF forward, the loop on the full sequence, VTU, w/o VTU, FastV, then
    the registry's pruners (``pruners``: name -> pruner). The loop variants return their KV cache."""
    from transformers import DynamicCache

    from ..language import FastV, Pruning, VirtualLayout, prefill
    from ..language.attention import use_dymu_attention

    identity = VirtualLayout.identity([full.shape[1]])
    consecutive = VirtualLayout.consecutive([rows.shape[1]])

    def hf_prefill(x=full):
        def fn():
            out = dec(inputs_embeds=x, use_cache=True)
            return head(out.last_hidden_state[:, -1])
        return fn

    def loop_prefill(x, lay, fv=None):
        def fn():
            with use_dymu_attention(dec):
                cache = DynamicCache(config=dec.config)
                run_ = prefill(dec, x, lay, fv, cache)
                head(run_.hidden[:, -1])
            return cache
        return fn

    return {
        "HF forward, full": hf_prefill(),
        "loop, identity (full)": loop_prefill(full, identity),
        f"VTU, {args.unique_image} unique image rows": loop_prefill(rows, layout),
        "w/o VTU (unique rows only)": loop_prefill(rows, consecutive),
        f"FastV K={args.fastv_k}, keep {args.fastv_keep:.0%}": loop_prefill(
            full, identity, Pruning(FastV(args.fastv_k, 1.0 - args.fastv_keep), image)),
        # the control: HF's own forward over as many rows as VTU runs, i.e. the CPU's efficiency at that size
        "HF forward, unique rows only": hf_prefill(rows),
        **{name: loop_prefill(full, identity, Pruning(pruner, image)) for name, pruner in pruners.items()},
    }


def _pruned_flops(dec, config, full, image, n_text: int, pruners: dict) -> dict[str, tuple[float, int]]:
    """name -> (analytic prefill FLOPs, image entries after the last cut) of each registry pruner,
    from the stages one prefill of it leaves (as the pipeline accounts them)."""
    from ..accounting import CutCount, TransformerShape, prefill_flops, prefill_plan
    from ..language import Pruning, VirtualLayout, prefill

    shape = TransformerShape.from_config(config)
    identity = VirtualLayout.identity([full.shape[1]])
    n_img = int(image.sum())
    out = {}
    for name, pruner in pruners.items():
        pruning = Pruning(pruner, image)
        prefill(dec, full, identity, pruning)
        cuts = [CutCount(s.layer, s.rows[0], s.entries[0], "last_query_attention" in c.needs,
                         s.score_flops[0] if s.score_flops else 0.0)
                for s, c in zip(pruning.stages, pruner.cuts())]
        plan = prefill_plan(shape.layers, n_text, n_img, n_img, False, cuts)
        out[name] = (prefill_flops(shape, plan, 1, cuts).total, cuts[-1].entries if cuts else n_img)
    return out


def _runnable(dec, full, image, pruners: dict, skipped: dict, owners: dict) -> dict:
    """The pruners that run on this request: one untimed prefill each; a setting the request cannot
    satisfy (more kept tokens than it has, ...) moves the method to ``skipped`` with its one line."""
    import torch

    from ..errors import ConfigError
    from ..language import Pruning, VirtualLayout, prefill

    identity = VirtualLayout.identity([full.shape[1]])
    ok = {}
    for name, pruner in pruners.items():
        try:
            with torch.no_grad():
                prefill(dec, full, identity, Pruning(pruner, image))
        except ConfigError as exc:
            skipped[owners[name]] = str(exc)
            continue
        ok[name] = pruner
    return ok


def _decoders(dec, head, full, rows, layout, args) -> dict:
    """Decode variants for ``lockstep``: each sets up its prefill and returns its step (one token):
    HF with its own cache, the loop on the full sequence, VTU."""
    import torch
    from transformers import DynamicCache

    from ..language import DecodeConfig, Decoding, VirtualLayout

    decode_cfg = DecodeConfig(max_new_tokens=args.new_tokens)
    n_virtual = full.shape[1]

    def hf_decode():
        cache = DynamicCache(config=dec.config)
        out = dec(inputs_embeds=full, cache=cache, use_cache=True)
        ids = head(out.last_hidden_state[:, -1]).argmax(-1)
        # the first token comes from the prefill, as in the loop: new_tokens - 1 decoder steps follow
        positions = iter(range(n_virtual, n_virtual + args.new_tokens - 1))

        def step() -> bool:
            nonlocal ids
            pos = next(positions, None)
            if pos is None:
                return False
            out = dec(input_ids=ids[:, None], cache=cache, use_cache=True,
                      position_ids=torch.full((1, 1), pos, device=full.device))
            ids = head(out.last_hidden_state[:, -1]).argmax(-1)
            return True
        return step

    def loop_decode(x, lay):
        return lambda: Decoding(dec, head, x, lay, decode_cfg).step

    return {
        "HF decode, full": hf_decode,
        "loop, identity (full)": loop_decode(full, VirtualLayout.identity([n_virtual])),
        f"VTU, {args.unique_image} unique image rows": loop_decode(rows, layout),
    }


def run(args: argparse.Namespace) -> int:
    import torch

    from ..accounting import TransformerShape, decode_flops, decode_value_rows, prefill_flops, prefill_plan
    from ..language import split_causal_lm

    _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok, label = _load(args)
    label = prepacked(model, args, label)
    dec, head = split_causal_lm(model)
    args.decoder_layers = model.config.num_hidden_layers
    full, rows, layout, image, n_text = _request(model, tok, args)
    full, rows, image = full.to(args.device), rows.to(args.device), image.to(args.device)
    sync = device_sync(args.device)
    pruners, skipped, owners = _registry_pruners(model, args)
    pruners = _runnable(dec, full, image, pruners, skipped, owners)
    variants = _prefills(dec, head, full, rows, layout, image, args, pruners)
    decoders = _decoders(dec, head, full, rows, layout, args)
    memory = PeakMemory(args.device)
    with torch.no_grad():
        times = interleaved(variants, args.repeats, args.warmup, sync, device=args.device, memory=memory)
        per_token = lockstep(decoders, args.repeats, args.warmup, sync, args.device)
        caches = {"full": _cache_bytes(variants["loop, identity (full)"]()),
                  "vtu": _cache_bytes(variants[f"VTU, {args.unique_image} unique image rows"]())}
        pruned = _pruned_flops(dec, model.config, full, image, n_text, pruners)
    keys = list(variants)
    flop_ratio = _flop_ratios(model.config, keys[:6], n_text, args, rows.shape[1] - n_text)
    shape = TransformerShape.from_config(model.config)
    full_flops = prefill_flops(shape, prefill_plan(shape.layers, n_text, args.image_tokens, args.image_tokens,
                                                   True)).total
    flop_ratio.update({k: f / full_flops for k, (f, _) in pruned.items()})
    entries = {k: e for k, (_, e) in pruned.items()}
    steps, depth = max(args.new_tokens - 1, 1), shape.layers
    vtu_plan = prefill_plan(depth, n_text, rows.shape[1] - n_text, args.image_tokens, True)
    decode_ratio = (decode_flops(shape, [full.shape[1]] * depth, steps, decode_value_rows(shape, vtu_plan)).total
                    / decode_flops(shape, [full.shape[1]] * depth, steps).total)
    _report(args, label, times, per_token, caches, flop_ratio, full.shape[1], rows.shape[1], n_text, memory,
            entries, skipped, decode_ratio)
    return 0


def _report(args, label: str, times: dict, per_token: dict, caches: dict, flop_ratio: dict, n_virtual: int,
            n_unique: int, n_text: int, memory, pruned_entries: dict, skipped: dict, decode_ratio: float) -> None:
    """The tables on stdout and, with --json, the numbers in a file."""
    import torch

    keys, dkeys = list(times), list(per_token)
    vs_hf, vs_loop = paired_ratios(times, keys[0]), paired_ratios(times, keys[1])
    print(f"language bench: {label}, {n_virtual} virtual tokens ({args.image_tokens} image + {n_text} text), "
          f"device {args.device}, {args.dtype}, threads {torch.get_num_threads()}, {args.repeats} interleaved "
          "repeats")
    print("vs HF / vs loop = time ratios (median over repeats of the ratio within a repeat); FLOP ratio = "
          "analytic prefill FLOPs / the full sequence's (2 per "
          "multiply-add), the floor the time ratio is chasing; time/FLOP = (vs HF) / FLOP ratio")
    print(f"{'prefill variant':36s} {'median ms':>10s} {'min ms':>9s} {'vs HF':>7s} {'vs loop':>8s} "
          f"{'FLOP ratio':>10s} {'time/FLOP':>9s} {'rows':>9s} {'peak MiB':>9s}")
    rows_of = {keys[0]: n_virtual, keys[1]: n_virtual, keys[2]: n_unique, keys[3]: n_unique,
               keys[4]: f"{n_virtual}->{n_text + round(args.image_tokens * args.fastv_keep)}", keys[5]: n_unique,
               **{k: f"{n_virtual}->{n_text + e}" for k, e in pruned_entries.items()}}
    results = []
    for k in keys:
        med = statistics.median(times[k])
        peak = memory.mib(k)
        results.append({"variant": k, "median_ms": 1000 * med, "min_ms": 1000 * min(times[k]),
                        "times_ms": [1000 * t for t in times[k]],
                        "ratio_vs_hf": vs_hf[k], "ratio_vs_loop": vs_loop[k], "flop_ratio": flop_ratio[k],
                        "time_over_flop_ratio": vs_hf[k] / flop_ratio[k], "rows": str(rows_of[k]),
                        "peak_mib": peak})
        print(f"{k:36s} {1000 * med:10.1f} {1000 * min(times[k]):9.1f} {vs_hf[k]:7.3f} {vs_loop[k]:8.3f} "
              f"{flop_ratio[k]:10.3f} {vs_hf[k] / flop_ratio[k]:9.3f} {rows_of[k]!s:>9s} "
              f"{'-' if peak is None else f'{peak:.0f}':>9s}")
    vtu_vs_ctl = paired_ratios(times, keys[5])[keys[2]]
    vtu_f = flop_ratio[keys[2]] / flop_ratio[keys[5]]
    print(f"VTU against the control (HF's forward on the same {n_unique} rows): time {vtu_vs_ctl:.3f}, "
          f"FLOPs {vtu_f:.3f}, time/FLOP {vtu_vs_ctl / vtu_f:.3f} (what VTU itself adds)")
    for method, why in skipped.items():
        print(f"skipped {method}: {why}")
    full_cache, vtu_cache = caches["full"], caches["vtu"]
    ratio_rows = n_unique / n_virtual
    print(f"KV cache bytes: VTU {vtu_cache} / full {full_cache} = {vtu_cache / full_cache:.4f} "
          f"(unique/virtual length {n_unique}/{n_virtual} = {ratio_rows:.4f})")
    tok = {k: statistics.median(v) for k, v in per_token.items()}
    tok_hf, tok_full, tok_vtu = (tok[k] for k in dkeys)
    # lockstep rounds pair the steps: the i-th step of every variant ran in the same round
    decode_vs_hf = paired_ratios(per_token, dkeys[0])
    full_vs_hf, vtu_vs_hf = decode_vs_hf[dkeys[1]], decode_vs_hf[dkeys[2]]
    vtu_vs_full = paired_ratios(per_token, dkeys[1])[dkeys[2]]
    print(f"decode per token ({args.new_tokens} tokens): HF {1000 * tok_hf:.2f} ms, "
          f"loop full {1000 * tok_full:.2f} ms, VTU {1000 * tok_vtu:.2f} ms; "
          f"loop full/HF {full_vs_hf:.3f}, VTU/HF {vtu_vs_hf:.3f}, VTU/loop full {vtu_vs_full:.3f} "
          f"(decode FLOP ratio VTU/full {decode_ratio:.4f})")
    if args.json_out:
        write_json(args.json_out, {
            "model": label, "shape": args.shape, "layers": args.decoder_layers,
            "seed": args.seed, "dtype": args.dtype, "device": args.device, "cpu_prepack": args.cpu_prepack,
            "prepack_below_rows": args.prepack_below_rows,
            "threads": torch.get_num_threads(),
            "repeats": args.repeats, "virtual_tokens": n_virtual, "unique_rows": n_unique, "prefill": results,
            "vtu_vs_control": {"time_ratio": vtu_vs_ctl, "flop_ratio": vtu_f,
                               "time_over_flop_ratio": vtu_vs_ctl / vtu_f},
            "skipped": skipped,
            "kv_cache_bytes": {"full": full_cache, "vtu": vtu_cache, "ratio": vtu_cache / full_cache,
                               "unique_over_virtual": ratio_rows},
            "decode_ms_per_token": {"hf_full": 1000 * tok_hf, "loop_full": 1000 * tok_full, "vtu": 1000 * tok_vtu,
                                    "ratio_vs_hf": vtu_vs_hf, "ratio_vs_loop": vtu_vs_full,
                                    "loop_full_vs_hf": full_vs_hf, "vtu_flop_ratio": decode_ratio},
        })
