"""Packed questions give the logits of separate prompts (on a tiny random Llama)."""
import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from dymu_eval.errors import ConfigError
from dymu_eval.offline.micro_llava import CHAT_TEMPLATE, IMAGE_TOKEN
from dymu_eval.offline.packing import pack, packed_hidden, prompt_ids
from tests.helpers.numerics import assert_rounding_close, forward_ops

SEQ = 9  # image tokens


@pytest.fixture(scope="module")
def tok(smol):
    t = AutoTokenizer.from_pretrained(smol[0].name_or_path)
    t.add_tokens([IMAGE_TOKEN], special_tokens=True)
    t.chat_template = CHAT_TEMPLATE
    return t


@pytest.fixture(scope="module")
def tiny(tok, tmp_path_factory):
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return LlamaForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()  # the identity below, in float64


QA = [("Is there a red circle?", "Yes"), ("What color is the square?", "Blue"),
      ("Describe the image briefly.", "A red circle and a blue square on a plain background.")]


def test_pack_layout(tok):
    p = pack(tok, QA, SEQ)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    assert int((p.input_ids == image_id).sum()) == SEQ
    assert p.mask.shape == (len(p.input_ids),) * 2
    assert sorted(set(p.branch_of.tolist())) == [0, 1, 2]
    # every target is the token right after its predicting position, and the last one per branch is <|im_end|>
    assert torch.equal(p.input_ids[p.predict_at + 1], p.targets)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for k in range(3):
        assert p.targets[p.branch_of == k][-1] == end
    # a branch never sees another branch
    a = p.predict_at[p.branch_of == 0][-1]
    b = p.predict_at[p.branch_of == 1][0]
    assert not p.mask[b, a] and not p.mask[a, b]


def test_packed_equals_separate_prompts(tok, tiny):
    image = torch.randn(SEQ, 32, dtype=torch.float64)
    p = pack(tok, QA, SEQ)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    with torch.no_grad():
        packed = tiny.lm_head(packed_hidden(tiny.model, image, p, image_id)[p.predict_at])
        for k, (q, a) in enumerate(QA):
            ids = prompt_ids(tok, q, SEQ) + tok(a, add_special_tokens=False)["input_ids"]
            ids = torch.tensor(ids)
            emb = tiny.model.embed_tokens(ids).masked_scatter((ids == image_id)[:, None], image)
            logits = tiny(inputs_embeds=emb[None]).logits[0]
            n = int((p.branch_of == k).sum())
            assert_rounding_close(packed[p.branch_of == k], logits[-n:], forward_ops(tiny.config, len(p.input_ids)), q)


def test_bad_inputs(tok, tiny):
    with pytest.raises(ConfigError, match="at least one"):
        pack(tok, [], SEQ)
    p = pack(tok, QA[:1], SEQ)
    with pytest.raises(ConfigError, match="9 image slots but 4 image features"):
        packed_hidden(tiny.model, torch.randn(4, 32), p, tok.convert_tokens_to_ids(IMAGE_TOKEN))
