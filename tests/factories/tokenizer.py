"""A word-level tokenizer over the words of the bundled offline tasks, so prompts tokenize without
many unknowns. The tiny LLaVA and LLaVA-OneVision folders both carry one."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

BASE_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0-3; media tokens such as <image> follow


def task_words(tasks_dir: Path) -> list[str]:
    words = set("user assistant answer the question using a single word or phrase please yes no".split())
    for f in sorted(tasks_dir.rglob("*.jsonl")):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            words.update(re.findall(r"\w+|[^\w\s]", f"{row['question']} {row['answer']}".lower()))
            words.update(re.findall(r"\w+|[^\w\s]", f"{row['question']} {row['answer']}"))
    words.update(["USER", ":", "ASSISTANT", "?", ".", ","])
    return sorted(words)


def word_tokenizer(tasks_dir: Path, specials: list[str], chat_template: str,
                   extra_words: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """``specials`` (``BASE_SPECIALS`` then media tokens like ``<image>``) first, then the task words."""
    assert specials[:len(BASE_SPECIALS)] == BASE_SPECIALS, specials
    media = specials[len(BASE_SPECIALS):]
    words = sorted(set(task_words(tasks_dir)) | set(extra_words))
    vocab = {t: i for i, t in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={f"{t.strip('<>')}_token": t for t in media}, padding_side="left",
    )
    fast.add_special_tokens({"additional_special_tokens": media})
    fast.chat_template = chat_template
    return fast
