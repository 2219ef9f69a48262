"""lmms-eval model classes: ``dymu_llava`` (simple and chat), ``tome_llava``, ``fastv_llava``,
``random_llava``, ``pool_llava``, ``visionzip_llava``, and the LLaVA-OneVision peers
``dymu_llava_onevision``, ``tome_llava_onevision``, ``fastv_llava_onevision``, ``random_llava_onevision``,
``pool_llava_onevision``, ``visionzip_llava_onevision``.

Thin adapters: they parse model_args, load the LLaVA family module with the asked reduction,
turn lmms-eval requests into prompts and images, and write one stats row per request. All
model logic lives in ``dymu_eval.vlm``; this is the only package that imports lmms_eval.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from accelerate import Accelerator
from lmms_eval import utils as lmms_utils
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.model_utils.gen_metrics import log_metrics
from loguru import logger
from tqdm import tqdm

from ..errors import ConfigError
from ..language import DecodeConfig
from ..vlm import llava, llava_onevision
from ..vlm.reduction import (
    Reduction,
    dymu_reduction,
    fastv_reduction,
    pool_reduction,
    random_reduction,
    tome_reduction,
    visionzip_reduction,
)
from ..vocabulary import BASELINE, CUSTOM_LEVEL
from .args import ModelArgs, parse_model_args
from .stats import StatsWriter, new_run_stamp, stats_dir, throughput_metrics

# The kwarg under which create_from_arg_string hands the names of the kwargs lmms-eval added from
# its own options (--batch_size, --device, --max_batch_size) to the constructor.
LMMS_FLAGS = "_lmms_eval_flags"


def _device_option(kwargs: dict[str, Any], flags: tuple[str, ...]) -> str:
    """How the user asked for the device, for messages: ``device_map=``, lmms-eval's ``--device``, or ``device=``."""
    if not kwargs.get("device_map") and kwargs.get("device"):
        return "--device " if "device" in flags else "device="
    return "device_map="


def _device_map(args: ModelArgs, accelerator: Accelerator, option: str = "device_map=") -> str:
    """One full model per process: cuda:<local rank> on GPUs, cpu otherwise. ``option`` is how the
    user gave the device (``_device_option``), named in the message when no GPU is there."""
    wanted = args.device_map
    local = int(os.environ.get("LOCAL_RANK", accelerator.local_process_index))
    if wanted is None:
        return f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if int(os.environ.get("WORLD_SIZE", accelerator.num_processes)) > 1:
        if wanted == "auto":
            raise ConfigError("device_map=auto spreads one model over all GPUs; with several processes "
                              "(accelerate launch) use device_map=cuda, one GPU per process")
        if wanted == "cuda":
            return f"cuda:{local}"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{option}{wanted} but no CUDA device is available; use {option}cpu")
    return wanted


def _reduction(args: ModelArgs, pipe: llava.LlavaPipeline, call: str) -> Reduction:
    """The asked reduction for ``pipe``; ``call`` is how its family calls the encoder (merge.Threshold)."""
    pipe_model, runner = pipe.model, pipe.runner
    if args.method == BASELINE:
        return Reduction()
    if args.method == "tome":
        level = None if args.level == CUSTOM_LEVEL else args.level
        return tome_reduction(runner, args.r, level, args.schedule, args.vtu, args.merge_order)
    if args.method == "fastv":
        return fastv_reduction(args.fastv_k, args.fastv_ratio, len(pipe.decoder.layers))
    if args.method == "random":
        return random_reduction(runner, args.keep, args.seed)
    if args.method == "pool":
        return pool_reduction(runner, args.pool_factor, args.vtu)
    if args.method == "visionzip":
        return visionzip_reduction(runner, args.dominant, args.contextual, args.vtu)
    names = [args.pretrained, runner.encoder_key]
    return dymu_reduction(pipe_model, runner, names, args.thresholds, args.level, args.r, args.schedule, args.vtu,
                          merge_order=args.merge_order, call=call, ignore_fingerprint=args.ignore_fingerprint)


def _decode_config(gen_kwargs: dict[str, Any], tokenizer, eos_ids: list[int]) -> DecodeConfig:
    """lmms-eval gen_kwargs -> DecodeConfig: eos always ends a sample, ``until`` strings cut it;
    greedy unless temperature > 0 (as llava_hf decides) and do_sample is not false."""
    kw = dict(gen_kwargs)
    if int(kw.get("num_beams", 1) or 1) != 1:
        raise ConfigError(f"gen_kwargs num_beams={kw['num_beams']}: beam search is not supported (use num_beams=1)")
    until = kw.get("until") or []
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, (list, tuple)):
        raise ConfigError(f"gen_kwargs until={until!r} must be a string or a list of strings")
    temperature = float(kw.get("temperature", 0) or 0)
    top_p = kw.get("top_p")
    do_sample = temperature > 0 and bool(kw.get("do_sample", True))
    return DecodeConfig(
        max_new_tokens=int(kw.get("max_new_tokens", 1024)),
        do_sample=do_sample,
        temperature=temperature if do_sample else 1.0,
        top_p=float(top_p) if top_p is not None and do_sample else 1.0,
        eos_token_ids=eos_ids,
        stop_strings=[u for u in until if u],
        tokenizer=tokenizer,
        seed=torch.initial_seed(),  # lmms-eval's --seed, so sampled answers repeat run to run
    )


class DymuLlava(lmms):
    """LLaVA-1.5 with DyMU / ToMe / FastV / random / pool / VisionZip / no reduction (simple API:
    generate_until, loglikelihood)."""

    is_simple = True
    MODEL_ID = "dymu_llava"  # its default model_args: vocabulary.MODEL_DEFAULTS
    ENCODER_CALL = llava.ENCODER_CALL

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "DymuLlava":
        """lmms-eval's own construction (``--model_args`` plus its --batch_size, --device and
        --max_batch_size), keeping the two apart: a model_arg that lmms-eval also passes is refused
        in one line (its default would crash as "got multiple values"), and the constructor learns
        which values came from lmms-eval's options, so their messages name those options."""
        args = lmms_utils.simple_parse_args_string(arg_string)
        flags = {k: v for k, v in (additional_config or {}).items() if v is not None}
        clash = sorted(set(args) & set(flags))
        if clash:
            name = clash[0]
            raise ConfigError(f"model_arg {name}={args[name]}: lmms-eval passes its own --{name}; "
                              f"use --{name} instead of {name}= in --model_args")
        return cls(**args, **flags, **{LMMS_FLAGS: tuple(flags)})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        flags = tuple(kwargs.pop(LMMS_FLAGS, ()))
        self.args = parse_model_args(kwargs, self.MODEL_ID, flags)
        accelerator = Accelerator()
        device_map = _device_map(self.args, accelerator, _device_option(kwargs, flags))
        self.pipe = self._load_pipe(device_map)
        self.pipe.reduction = _reduction(self.args, self.pipe, self.ENCODER_CALL)
        self.accelerator = accelerator
        # lmms-eval shards by the launcher's RANK/WORLD_SIZE (an Accelerator on CPU may not see them)
        self._rank = int(os.environ.get("RANK", accelerator.process_index))
        self._world_size = int(os.environ.get("WORLD_SIZE", accelerator.num_processes))
        self._device = self.pipe.device
        self.batch_size_per_gpu = self.args.batch_size
        folder, found = stats_dir(self.args.stats_dir)
        if not found and self._rank == 0:
            logger.warning(f"dymu-eval: no --output_path or stats_dir=, per-sample stats go to {folder}")
        red = self.pipe.reduction
        self.stats = StatsWriter(folder, new_run_stamp(), self._rank, {
            "model": self.MODEL_ID, "method": self.args.method, "level": self.args.level, "r": self.args.r,
            "thresholds": red.thresholds_key or self.args.thresholds, "schedule": self.args.schedule,
            "merge_order": self.args.merge_order,
            "vtu": red.vtu, "fastv_k": red.fastv_k, "fastv_ratio": red.fastv_ratio, "keep": self.args.keep,
            "seed": self.args.seed, "pool_factor": self.args.pool_factor, "dominant": self.args.dominant,
            "contextual": self.args.contextual, "pretrained": self.args.pretrained,
            **self._family_constants(),
        })
        if self._rank == 0:
            logger.info(f"dymu-eval: {self.MODEL_ID} {self.args.to_dict()}; per-sample stats -> {self.stats.path}")

    def _load_pipe(self, device_map: str):
        model, processor = llava.load_llava(self.args.pretrained, device_map, self.args.dtype,
                                            self.args.attn_implementation)
        return llava.LlavaPipeline(model, processor)

    def _family_constants(self) -> dict[str, Any]:
        return {}

    # -- properties lmms-eval reads ---------------------------------------------------------
    @property
    def tokenizer(self):
        return self.pipe.tokenizer

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    # -- helpers ----------------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: int):
        return self.task_dict[task][split][doc_id]

    def _visuals(self, doc_to_visual, task: str, split: str, doc_id: int) -> list:
        visuals = doc_to_visual(self._doc(task, split, doc_id)) if doc_to_visual is not None else []
        return self._images(visuals, task, doc_id)

    @staticmethod
    def _images(visuals, task: str, doc_id: int) -> list:
        from PIL import Image

        out = []
        for v in visuals or []:
            if not isinstance(v, Image.Image):
                raise ConfigError(f"{task} doc {doc_id}: only images are supported, got {type(v).__name__} "
                                  "(video and audio inputs are not)")
            out.append(v.convert("RGB"))
        return out

    def _record(self, metas: list[tuple[str, int]], stats: list[dict], request: str) -> None:
        """One stats row per request, and its averages into lmms-eval's results (the throughput block)."""
        self.stats.write([{**s, "task": t, "doc_id": d, "request": request} for (t, d), s in zip(metas, stats)])
        for s in stats:
            # prefill/decode times are the batch's (loglikelihood: already per request): share them out
            share = 1 if request == "loglikelihood" else len(stats)
            seconds = (s["encoder_ms"] + (s["prefill_ms"] + s["decode_ms"]) / share) / 1000.0
            log_metrics(total_elapsed_time=seconds, total_gen_tokens=int(s["new_tokens"]),
                        avg_speed=s["new_tokens"] / seconds if seconds > 0 else 0.0,
                        additional_metrics={**throughput_metrics(s), "total_requests": 1})

    def _eos(self) -> list[int]:
        return list(self.pipe.eos_ids)

    # -- lmms-eval API ----------------------------------------------------------------------
    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        collator = self._collator(requests)
        results: list[GenerationResult] = []
        with tqdm(total=len(requests), disable=self.rank != 0, desc=f"{self.MODEL_ID} generate") as bar:
            for chunk in collator.get_batched(n=self.batch_size, batch_fn=None):
                reqs, metas, gen_kwargs = self._chunk_requests(chunk)
                config = _decode_config(gen_kwargs, self.tokenizer, self._eos())
                outs, stats = llava.generate(self.pipe, reqs, config)
                self._record(metas, stats, "generate_until")
                results += [GenerationResult(text, TokenCounts(input_tokens=s["unique_len"],
                                                               output_tokens=s["new_tokens"]))
                            for text, s in zip(outs, stats)]
                bar.update(len(chunk))
        return collator.get_original(results)

    # simple requests: (context, gen_kwargs, doc_to_visual, doc_id, task, split)
    def _collator(self, requests: list[Instance]):
        """Longest prompts first, one batch per distinct gen_kwargs (as llava_hf groups them)."""
        return lmms_utils.Collator([r.args for r in requests], lambda x: (-len(self.tokenizer.encode(x[0])), x[0]),
                                   grouping=True)

    def _request(self, context: str, dtv, doc_id: int, task: str, split: str,
                 continuation: str | None = None) -> tuple[llava.Request, str | None]:
        """One simple-path doc as this family's request (and the full text with ``continuation``)."""
        images = self._visuals(dtv, task, split, doc_id)
        text, full = llava.simple_prompt(self.tokenizer, context, len(images), continuation)
        return llava.Request(text, images, name=f"{task} doc {doc_id}"), full

    def _chunk_requests(self, chunk) -> tuple[list, list[tuple[str, int]], dict]:
        reqs = [self._request(ctx, dtv, doc_id, task, split)[0] for ctx, _, dtv, doc_id, task, split in chunk]
        return reqs, [(task, doc_id) for *_, doc_id, task, _ in chunk], chunk[0][1]

    def loglikelihood(self, requests: list[Instance]) -> list:
        """Per request ``(-log p(continuation | context), greedy)``, wrapped for lmms-eval 0.7.3.

        Two lmms-eval 0.7.3 conventions decide the shape: its multiple_choice scoring takes the
        *argmin* over choices (models such as llava_hf return a loss), so the value is the
        summed negative log-likelihood; and its evaluator stringifies plain tuples, so each pair
        travels inside a GenerationResult, which it unwraps unchanged.
        """
        results: list = []
        args = [r.args for r in requests]
        with tqdm(total=len(args), disable=self.rank != 0, desc=f"{self.MODEL_ID} loglikelihood") as bar:
            for start in range(0, len(args), self.batch_size):
                results += self._loglikelihood_chunk(args[start:start + self.batch_size])
                bar.update(len(args[start:start + self.batch_size]))
        return results

    def _loglikelihood_chunk(self, chunk) -> list[GenerationResult]:
        reqs, fulls, metas = [], [], []
        for context, doc_to_target, doc_to_visual, doc_id, task, split in chunk:
            doc = self._doc(task, split, doc_id)
            continuation = doc_to_target if isinstance(doc_to_target, str) else doc_to_target(doc)
            req, full = self._request(context, doc_to_visual, doc_id, task, split, continuation)
            reqs.append(req)
            fulls.append(full)
            metas.append((task, doc_id))
        scores, stats = llava.loglikelihood(self.pipe, reqs, fulls)
        self._record(metas, stats, "loglikelihood")
        return [GenerationResult((-logp, greedy)) for logp, greedy in scores]

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(f"{self.MODEL_ID} does not implement multi-round generation")


class ChatRequests:
    """The chat path of either family: prompts from the processor's chat template over lmms-eval
    messages; the family turns each doc's messages into its request (``_chat_request``)."""

    is_simple = False

    # chat requests: (context, doc_to_messages, gen_kwargs, doc_id, task, split)
    def _collator(self, requests: list[Instance]):
        return lmms_utils.Collator([r.args for r in requests], lambda x: (x[3], x[3]), group_fn=lambda x: x[2],
                                   grouping=True)

    def _chunk_requests(self, chunk) -> tuple[list, list[tuple[str, int]], dict]:
        from lmms_eval.protocol import ChatMessages

        reqs, metas = [], []
        for _, dtm, _, doc_id, task, split in chunk:
            messages = ChatMessages(messages=dtm(self._doc(task, split, doc_id)))
            reqs.append(self._chat_request(messages, task, doc_id))
            metas.append((task, doc_id))
        return reqs, metas, chunk[0][2]

    def _chat_prompt(self, messages) -> str:
        return llava.chat_prompt(self.pipe.processor, messages.model_dump()["messages"])

    def loglikelihood(self, requests):
        raise NotImplementedError(f"{self.MODEL_ID} (chat) has no loglikelihood; use --force_simple")


class DymuLlavaChat(ChatRequests, DymuLlava):
    """Chat variant of the LLaVA-1.5 models (images only)."""

    def _chat_request(self, messages, task: str, doc_id: int) -> llava.Request:
        images, videos, audios = messages.extract_media()
        if videos or audios:
            raise ConfigError(f"{task} doc {doc_id}: video and audio inputs are not supported")
        images = self._images(images, task, doc_id)
        return llava.Request(self._chat_prompt(messages), images, name=f"{task} doc {doc_id}")


class TomeLlava(DymuLlava):
    MODEL_ID = "tome_llava"


class TomeLlavaChat(DymuLlavaChat):
    MODEL_ID = "tome_llava"


class FastvLlava(DymuLlava):
    MODEL_ID = "fastv_llava"


class FastvLlavaChat(DymuLlavaChat):
    MODEL_ID = "fastv_llava"


class RandomLlava(DymuLlava):
    MODEL_ID = "random_llava"


class RandomLlavaChat(DymuLlavaChat):
    MODEL_ID = "random_llava"


class PoolLlava(DymuLlava):
    MODEL_ID = "pool_llava"


class PoolLlavaChat(DymuLlavaChat):
    MODEL_ID = "pool_llava"


class VisionzipLlava(DymuLlava):
    MODEL_ID = "visionzip_llava"


class VisionzipLlavaChat(DymuLlavaChat):
    MODEL_ID = "visionzip_llava"


# ------------------------------------------------------------------------------------- LLaVA-OneVision
class DymuLlavaOnevision(DymuLlava):
    """LLaVA-OneVision (AnyRes images, several images, video) with DyMU / ToMe / FastV / no reduction."""

    MODEL_ID = "dymu_llava_onevision"
    ENCODER_CALL = llava_onevision.ENCODER_CALL

    def _load_pipe(self, device_map: str):
        model, processor = llava_onevision.load_onevision(self.args.pretrained, device_map, self.args.dtype,
                                                          self.args.attn_implementation)
        pipe = llava_onevision.OnevisionPipeline(model, processor)
        pipe.layout, pipe.multi_image = self.args.layout, self.args.multi_image
        return pipe

    def _family_constants(self) -> dict[str, Any]:
        return {"max_frames_num": self.args.max_frames_num, "layout": self.args.layout,
                "multi_image": self.args.multi_image}

    def _media(self, visuals, task: str, doc_id: int) -> tuple[list, list]:
        """Images (PIL) and videos (paths, sampled like llava_hf) of one doc."""
        from PIL import Image

        images, videos = [], []
        for v in visuals or []:
            if isinstance(v, Image.Image):
                images.append(v.convert("RGB"))
            elif isinstance(v, str):
                videos.append(llava_onevision.load_video(v, self.args.max_frames_num, name=f"{task} doc {doc_id}"))
            else:
                raise ConfigError(f"{task} doc {doc_id}: unsupported visual {type(v).__name__} "
                                  "(images and video file paths are supported)")
        return images, videos

    def _request(self, context: str, dtv, doc_id: int, task: str, split: str, continuation: str | None = None):
        visuals = dtv(self._doc(task, split, doc_id)) if dtv is not None else []
        images, videos = self._media(visuals, task, doc_id)
        text, full = llava_onevision.simple_prompt(self.tokenizer, context, len(images), len(videos), continuation)
        return llava_onevision.Request(text, images, videos, name=f"{task} doc {doc_id}"), full


class DymuLlavaOnevisionChat(ChatRequests, DymuLlavaOnevision):
    """Chat variant of the OneVision models (images, several images, video)."""

    def _chat_request(self, messages, task: str, doc_id: int) -> llava_onevision.Request:
        images, videos, audios = messages.extract_media()
        if audios:
            raise ConfigError(f"{task} doc {doc_id}: audio inputs are not supported")
        images, videos = self._media(list(images) + list(videos), task, doc_id)
        return llava_onevision.Request(self._chat_prompt(messages), images, videos, name=f"{task} doc {doc_id}")


class TomeLlavaOnevision(DymuLlavaOnevision):
    MODEL_ID = "tome_llava_onevision"


class TomeLlavaOnevisionChat(DymuLlavaOnevisionChat):
    MODEL_ID = "tome_llava_onevision"


class FastvLlavaOnevision(DymuLlavaOnevision):
    MODEL_ID = "fastv_llava_onevision"


class FastvLlavaOnevisionChat(DymuLlavaOnevisionChat):
    MODEL_ID = "fastv_llava_onevision"


class RandomLlavaOnevision(DymuLlavaOnevision):
    MODEL_ID = "random_llava_onevision"


class RandomLlavaOnevisionChat(DymuLlavaOnevisionChat):
    MODEL_ID = "random_llava_onevision"


class PoolLlavaOnevision(DymuLlavaOnevision):
    MODEL_ID = "pool_llava_onevision"


class PoolLlavaOnevisionChat(DymuLlavaOnevisionChat):
    MODEL_ID = "pool_llava_onevision"


class VisionzipLlavaOnevision(DymuLlavaOnevision):
    MODEL_ID = "visionzip_llava_onevision"


class VisionzipLlavaOnevisionChat(DymuLlavaOnevisionChat):
    MODEL_ID = "visionzip_llava_onevision"
