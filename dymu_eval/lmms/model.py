"""lmms-eval model classes: one simple and one chat adapter, specialised per model name.

Model names come from the registries (``lmms.names``): ``dymu_llava`` and every
``<method>_<family suffix>`` name (``tome_llava``, ``fastv_llava_onevision``, ...). Names of the
``llava`` suffix serve any registered family, chosen by the checkpoint's ``model_type`` (as
lmms-eval's ``llava_hf`` does with its model map); the others fix their family. The classes are
made on first access (``TomeLlava``, ``TomeLlavaChat``, ...), so a method or family registered by
an outside package gets its names too.

Thin adapters: they parse model_args, load the family's pipeline with the method's reduction, turn
lmms-eval requests into the family's requests and write one stats row per request. All model logic
lives in ``dymu_eval.vlm``; this is the only package that imports lmms_eval.
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
from ..methods import FAMILIES
from ..methods.budget import recorded_settings
from ..vlm.checkpoint import family_of_checkpoint
from ..vlm.reduction import load_reduced
from .args import ModelArgs, parse_model_args
from .names import GENERIC_FAMILY, class_name, model_of_class, model_preset
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


def checkpoint_family(pretrained: str, model: str) -> str:
    """The family serving ``pretrained``: by its config's model_type for the ``llava`` names, else the
    name's own family (whose loader refuses another architecture with its own message)."""
    _, family = model_preset(model)
    return family_of_checkpoint(pretrained, family, model) if family == GENERIC_FAMILY else family


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


class DymuModel(lmms):
    """A VLM of a registered family with a registered reduction method (simple API: generate_until,
    loglikelihood). ``MODEL_ID`` is the lmms-eval name the class was made for."""

    is_simple = True
    MODEL_ID = "dymu_llava"

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> DymuModel:
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
        _, preset_family = model_preset(self.MODEL_ID)
        pretrained = kwargs.get("pretrained") or FAMILIES[preset_family].default_checkpoint
        family = checkpoint_family(str(pretrained), self.MODEL_ID)
        self.args = parse_model_args(kwargs, self.MODEL_ID, flags, family)
        self.family = FAMILIES[family]
        accelerator = Accelerator()
        device_map = _device_map(self.args, accelerator, _device_option(kwargs, flags))
        self.pipe = load_reduced(self.args, device_map)
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
            "model": self.MODEL_ID, "family": family, "method": self.args.method, "level": self.args.level,
            **recorded_settings(red.settings), "vtu": red.vtu,
            **({"thresholds": red.thresholds_key} if red.thresholds_key else {}),
            "pretrained": self.args.pretrained, "cpu_prepack": self.args.cpu_prepack, **self.args.family_args,
        })
        if self._rank == 0:
            logger.info(f"dymu-eval: {self.MODEL_ID} ({family}) {self.args.to_dict()}; per-sample stats -> "
                        f"{self.stats.path}")

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
                outs, stats = self.pipe.generate(reqs, config)
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

    def _request(self, context: str, dtv, doc_id: int, task: str, split: str, continuation: str | None = None):
        """One simple-path doc as this family's request (and the full text with ``continuation``)."""
        visuals = dtv(self._doc(task, split, doc_id)) if dtv is not None else []
        return self.family.function("simple_request")(self.pipe, context, visuals, f"{task} doc {doc_id}",
                                                      continuation, self.args.family_args)

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
        scores, stats = self.pipe.loglikelihood(reqs, fulls)
        self._record(metas, stats, "loglikelihood")
        return [GenerationResult((-logp, greedy)) for logp, greedy in scores]

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(f"{self.MODEL_ID} does not implement multi-round generation")


class DymuModelChat(DymuModel):
    """The chat path of any family: the family turns each doc's lmms-eval messages into its request."""

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
            reqs.append(self.family.function("chat_request")(self.pipe, messages, f"{task} doc {doc_id}",
                                                             self.args.family_args))
            metas.append((task, doc_id))
        return reqs, metas, chunk[0][2]

    def loglikelihood(self, requests):
        raise NotImplementedError(f"{self.MODEL_ID} (chat) has no loglikelihood; use --force_simple")


def model_class(model: str, chat: bool) -> type:
    """The adapter class of an lmms-eval model name (made once, kept in this module)."""
    name = class_name(model, chat)
    cls = globals().get(name)
    if cls is None:
        base = DymuModelChat if chat else DymuModel
        cls = type(name, (base,), {"MODEL_ID": model, "__module__": __name__,
                                   "__doc__": f"lmms-eval model {model} ({'chat' if chat else 'simple'})."})
        globals()[name] = cls
    return cls


def __getattr__(name: str) -> type:
    """``TomeLlava``, ``FastvLlavaOnevisionChat``, ...: the class lmms-eval's manifest names."""
    found = model_of_class(name)
    if found is None:
        raise AttributeError(f"module {__name__} has no attribute {name}")
    return model_class(*found)
