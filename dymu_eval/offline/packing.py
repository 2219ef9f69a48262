"""Many single-turn questions about one image in one forward pass ("tree" packing).

Why: on two CPU cores the 256 image tokens dominate the cost of a training step. Packing K
questions behind one copy of the shared prompt (system message, image tokens) and letting each
question branch see only the shared prefix and itself (a 4D attention mask, positions
restarting after the prefix) gives exactly the logits of K separate prompts, K times cheaper.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dymu_eval.errors import ConfigError


@dataclass
class Packed:
    """One image's packed sequence. ``targets[j]`` is predicted from position ``predict_at[j]``."""

    input_ids: torch.Tensor      # (L,) with image placeholder tokens in the prefix
    position_ids: torch.Tensor   # (L,)
    mask: torch.Tensor           # (L, L) bool, True = may attend
    predict_at: torch.Tensor     # (M,) positions whose next-token logits are scored
    targets: torch.Tensor        # (M,) token ids expected there
    branch_of: torch.Tensor      # (M,) which question each target belongs to


def prompt_ids(tokenizer, question: str, image_seq_length: int, image_token: str = "<image>") -> list[int]:
    """Token ids of the generation prompt for one question, image token expanded as the processor does."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": f"{image_token}\n{question}"}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text.replace(image_token, image_token * image_seq_length), add_special_tokens=False)["input_ids"]


def pack(tokenizer, qa: list[tuple[str, str]], image_seq_length: int, image_token: str = "<image>",
         end_token: str = "<|im_end|>") -> Packed:
    """Pack ``(question, answer)`` pairs about one image; the answer and ``end_token`` are the targets."""
    if not qa:
        raise ConfigError("pack() needs at least one (question, answer) pair")
    image_id = tokenizer.convert_tokens_to_ids(image_token)
    end_id = tokenizer.convert_tokens_to_ids(end_token)
    prefix: list[int] | None = None
    branches: list[tuple[list[int], int]] = []  # (tokens after the prefix, number of answer targets)
    for question, answer in qa:
        ids = prompt_ids(tokenizer, question, image_seq_length, image_token)
        cut = max(i for i, t in enumerate(ids) if t == image_id) + 1
        if prefix is None:
            prefix = ids[:cut]
        elif ids[:cut] != prefix:
            raise ConfigError(f"question {question!r} changes the shared prompt prefix")
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [end_id]
        branches.append((ids[cut:] + answer_ids, len(answer_ids)))
    assert prefix is not None
    p = len(prefix)
    length = p + sum(len(b) for b, _ in branches)
    mask = torch.zeros(length, length, dtype=torch.bool)
    mask[:p, :p] = torch.ones(p, p, dtype=torch.bool).tril()
    ids, pos, predict_at, targets, branch_of = list(prefix), list(range(p)), [], [], []
    start = p
    for k, (tokens, n_answer) in enumerate(branches):
        n = len(tokens)
        mask[start:start + n, :p] = True
        mask[start:start + n, start:start + n] = torch.ones(n, n, dtype=torch.bool).tril()
        ids += tokens
        pos += list(range(p, p + n))
        first_answer = start + n - n_answer
        for j in range(n_answer):  # token at first_answer + j is predicted from the position before it
            predict_at.append(first_answer + j - 1)
            targets.append(tokens[n - n_answer + j])
            branch_of.append(k)
        start += n
    return Packed(torch.tensor(ids), torch.tensor(pos), mask, torch.tensor(predict_at),
                  torch.tensor(targets), torch.tensor(branch_of))


def packed_hidden(language_model, image_embeds: torch.Tensor, packed: Packed, image_token_id: int) -> torch.Tensor:
    """Final hidden states (L, D) of the packed sequence with ``image_embeds`` (N, D) spliced in."""
    embeds = language_model.get_input_embeddings()(packed.input_ids)
    slots = packed.input_ids == image_token_id
    if int(slots.sum()) != image_embeds.shape[0]:
        raise ConfigError(f"{int(slots.sum())} image slots but {image_embeds.shape[0]} image features")
    embeds = embeds.masked_scatter(slots[:, None], image_embeds.to(embeds.dtype))
    out = language_model(
        inputs_embeds=embeds[None], attention_mask=packed.mask[None, None],
        position_ids=packed.position_ids[None], use_cache=False,
    )
    return out.last_hidden_state[0]
