"""`dymu-eval flops`: analytic FLOPs from a model shape and token counts (no weights, no torch).

Prints the DyMU paper's Table 1 in its own convention (fvcore, 1 per multiply-add, query-key
products of one layer over the image tokens, exact-VTU kernel on unique rows), then FLOPs per
stage for a LLaVA-shaped request in this project's convention (2 per multiply-add, docs/plugin.md).
Any LLaVA-style shape works (LLaVA-1.5: CLIP + Llama; LLaVA-OneVision: SigLIP + Qwen2, whose
several AnyRes crops or video frames are ``--crops`` and whose stock positions are ``--virtual``).
"""
from __future__ import annotations

import argparse

from ..errors import ConfigError
from .options import check_at_least, check_output_file, write_json

# The DyMU paper's mean visual tokens of DyMU low/mid/high on LLaVA-1.5 (Table 1), of its 576 image positions.
PAPER_UNIQUE = (89, 195, 394)
PAPER_POSITIONS = 576
DEFAULT_FASTV = "2:0.5"


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flops", help="analytic FLOPs per stage and the paper's Table 1, from a model shape")
    p.add_argument("--model", default="llava-1.5-7b",
                   help="a shipped shape (llava-1.5-7b, llava-onevision-qwen2-7b) or a checkpoint folder / config.json")
    p.add_argument("--unique", type=_ints,
                   help="unique visual rows per setting, at most --virtual (default: DyMU low/mid/high as the paper's "
                        "Table 1 has them, 89/195/394 of LLaVA-1.5's 576 image positions, scaled to this model's "
                        "image positions: the same fraction kept)")
    p.add_argument("--crops", type=int, default=1, help="crops or frames the encoder runs on (LLaVA-OneVision: "
                   "the AnyRes base crop and grid crops, or a video's frames; default 1)")
    p.add_argument("--virtual", type=int, help="visual positions of the unreduced model, >= 1 (default: crops x "
                   "the encoder's patch count, 576 for LLaVA-1.5; give OneVision's AnyRes or pooled-video count here)")
    p.add_argument("--text", type=int, default=40, help="text tokens of the request (stage table)")
    p.add_argument("--new-tokens", type=int, default=1, help="generated tokens (stage table)")
    p.add_argument("--tome-r", type=_ints, default=[], help="also ToMe rows with these merges per layer")
    p.add_argument("--fastv", help=f"K:R of a FastV row: after decoder layer K (1 .. layers-1) drop the fraction R "
                   f"(0 <= R < 1) of image tokens ('' for none; default {DEFAULT_FASTV}, the paper's, on a decoder "
                   "deep enough for it)")
    p.add_argument("--json", dest="json_out", help="also write the numbers to this JSON file")
    p.set_defaults(func=run)


def table1(shape, unique: list[int], virtual: int) -> list[dict]:
    """Rows as fvcore reports them (the paper's figures) and as exact multiply-add counts."""
    from ..accounting import LayerRun, paper_qk_macs, table1_mflops

    heads, head_dim = shape.llm.heads, shape.llm.head_dim
    rows = []
    for name, n in [("full", virtual)] + [(f"vtu {n}", n) for n in unique]:
        exact = paper_qk_macs(heads, head_dim, LayerRun(n, virtual, virtual)) / 1e6
        rows.append({"setting": name, "n_unique": n, "n_virtual": virtual,
                     "mflops_fvcore": table1_mflops(n, virtual, heads, head_dim), "mflops_exact": exact})
    return rows


def stage_rows(shape, args, virtual: int, unique: list[int], fastv: tuple[int, float] | None) -> list[dict]:
    from ..accounting import CutCount, RequestCounts, stage_flops, tome_counts, unmerged_counts

    layers, crops = shape.layers_run, args.crops
    full_enc = [unmerged_counts(shape.vision, layers)] * crops
    no_match = [[False] * layers] * crops
    patches = crops * shape.vision.patches  # the projector runs on every crop's rows (OneVision: before any mixing)
    settings = [("baseline", RequestCounts(args.text, virtual, virtual, True, full_enc, no_match, args.new_tokens,
                                           projector_rows=patches))]
    for n in unique:
        # DyMU's encoder trajectory depends on the image; the stage table counts the LLM side only
        settings.append((f"VTU, {n} unique rows", RequestCounts(args.text, n, virtual, True, [], [], args.new_tokens)))
    for r in args.tome_r:
        per_layer = [r] * layers  # ToMe's constant schedule
        counts = tome_counts(shape.vision, per_layer)
        n = crops * (counts[-1] - int(shape.vision.has_cls))
        settings.append((f"ToMe r={r} (w/o VTU)", RequestCounts(args.text, n, virtual, False, [counts] * crops,
                                                               [[v > 0 for v in per_layer]] * crops,
                                                               args.new_tokens)))
    if fastv is not None:
        k, ratio = fastv
        kept = int(virtual * (1 - ratio) + 0.5)
        settings.append((f"FastV K={k} R={ratio:g}", RequestCounts(args.text, virtual, virtual, True, full_enc,
                                                                   no_match, args.new_tokens,
                                                                   cuts=[CutCount(k, kept, kept, True)],
                                                                   projector_rows=patches)))
    out = []
    for name, counts in settings:
        flops, _ = stage_flops(shape, counts)
        out.append({"setting": name, "encoder_gflops": flops.encoder.total / 1e9 if counts.encoder_counts else None,
                    "projector_gflops": flops.projector.total / 1e9, "prefill_gflops": flops.prefill.total / 1e9,
                    "prefill_attention_gflops": flops.prefill.attention / 1e9,
                    "decode_gflops": flops.decode.total / 1e9})
    return out


def parse_fastv(text: str | None, decoder_layers: int) -> tuple[int, float] | None:
    """``--fastv K:R`` as (K, R), checked against the decoder's depth; None for '' (and for the
    default on a decoder too shallow for its K)."""
    from ..vocabulary import check_fastv

    if text is None:
        k = int(DEFAULT_FASTV.partition(":")[0])
        return parse_fastv(DEFAULT_FASTV, decoder_layers) if k < decoder_layers else None
    if not text.strip():
        return None
    k_text, sep, r_text = text.partition(":")
    try:
        if not sep:
            raise ValueError
        k, ratio = int(k_text), float(r_text)
    except ValueError:
        raise ConfigError(f"--fastv {text}: expected K:R, e.g. 2:0.5 (layer K, fraction R of image tokens "
                          "dropped), or '' for no FastV row") from None
    try:
        check_fastv(k, ratio, decoder_layers)
    except ConfigError as exc:
        raise ConfigError(f"--fastv {text}: {exc}") from None
    return k, ratio


def unique_rows(given: list[int] | None, virtual: int) -> list[int]:
    """The unique-row settings: as given (each at most ``virtual``: a unique row stands for at least
    one position), or the paper's DyMU low/mid/high counts as fractions of ``virtual``."""
    if given is None:
        return [max(1, round(n * virtual / PAPER_POSITIONS)) for n in PAPER_UNIQUE]
    too_many = [n for n in given if n > virtual]
    if too_many:
        raise ConfigError(f"--unique {too_many[0]}: more unique rows than the {virtual} image positions they stand "
                          "for (--virtual; each unique row is at least one position)")
    return given


def run(args: argparse.Namespace) -> int:
    from ..accounting import load_shape

    if args.text < 0 or args.new_tokens < 0:
        raise ConfigError("--text and --new-tokens must not be negative")
    if args.crops < 1:
        raise ConfigError(f"--crops {args.crops}: the encoder runs on at least one crop")
    check_at_least("--virtual", args.virtual, 1)
    check_output_file("--json", args.json_out)
    shape = load_shape(args.model)
    virtual = args.crops * shape.vision.patches if args.virtual is None else args.virtual
    unique = unique_rows(args.unique, virtual)
    fastv = parse_fastv(args.fastv, shape.llm.layers)
    t1 = table1(shape, unique, virtual)
    print(f"Attention cost, the DyMU paper's Table 1 convention: fvcore MFLOPs (1 per multiply-add), query-key "
          f"products only, one layer, batch 1, image tokens only; {shape.llm.heads} heads x {shape.llm.head_dim} "
          f"({args.model}). 'fvcore' is what fvcore reports (einsum counts read from numpy's 4-digit printout), "
          "'exact' the multiply-adds themselves")
    if args.unique is None:
        print(f"unique rows: DyMU low/mid/high, the paper's {'/'.join(map(str, PAPER_UNIQUE))} of {PAPER_POSITIONS} "
              f"positions" + ("" if virtual == PAPER_POSITIONS else f", scaled to this model's {virtual}"))
    print(f"{'setting':22s} {'N_un':>6s} {'N':>6s} {'fvcore':>10s} {'exact':>10s}")
    for row in t1:
        print(f"{row['setting']:22s} {row['n_unique']:6d} {row['n_virtual']:6d} {row['mflops_fvcore']:10.1f} "
              f"{row['mflops_exact']:10.2f}")
    stages = stage_rows(shape, args, virtual, unique, fastv)
    print()
    print(f"FLOPs per stage (2 per multiply-add, GFLOPs), {args.text} text tokens, {args.crops} crop(s) or frame(s) "
          f"through the encoder, {virtual} image positions, "
          f"{args.new_tokens} generated token(s); prefill attention over the entries actually attended")
    print(f"{'setting':26s} {'encoder':>9s} {'projector':>10s} {'prefill':>9s} {'(attn)':>8s} {'decode':>8s} "
          f"{'prefill %':>9s}")
    base = stages[0]["prefill_gflops"]
    for row in stages:
        enc = "-" if row["encoder_gflops"] is None else f"{row['encoder_gflops']:.1f}"
        print(f"{row['setting']:26s} {enc:>9s} {row['projector_gflops']:10.2f} {row['prefill_gflops']:9.1f} "
              f"{row['prefill_attention_gflops']:8.2f} {row['decode_gflops']:8.2f} "
              f"{100 * row['prefill_gflops'] / base:8.1f}%")
    if args.json_out:
        write_json(args.json_out, {"model": args.model, "table1": t1, "stages": stages})
    return 0
