"""The word-anchored projector start: patch labels from scene facts, targets, and the fit."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from dymu_eval.offline import anchor, synthetic


class WordTokenizer:
    """One id per distinct word (enough for word_vector, which only needs input_ids)."""

    def __init__(self):
        self.ids: dict[str, int] = {}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [self.ids.setdefault(w, len(self.ids)) for w in text.split()]}


def one_object_scene(shape="square"):
    obj = synthetic.Obj(shape, "red", cx=105.0, cy=105.0, r=60.0)
    return synthetic.Facts(size=224, background="plain", objects=[obj])


@pytest.mark.parametrize("shape", synthetic.SHAPES)
def test_patch_labels_follow_the_drawn_shape(shape):
    facts = one_object_scene(shape)
    labels = anchor.patch_labels(facts, grid=16)
    assert labels.shape == (256,)
    centre = 8 * 16 + 8
    assert labels[centre] == 0
    assert labels[0] == labels[15] == labels[255] == anchor.BACKGROUND
    assert (labels == anchor.AMBIGUOUS).any()  # the outline cuts through some patches
    # each label agrees with the covered fraction of its 14x14 cell, measured on a separate mask
    canvas = Image.new("1", (224, 224), 0)
    synthetic.draw_shape(ImageDraw.Draw(canvas), facts.objects[0], fill=1, outline=1)
    cover = np.asarray(canvas).reshape(16, 14, 16, 14).mean(axis=(1, 3)).ravel()
    assert (cover[labels == 0] >= 0.5).all()
    assert (cover[labels == anchor.BACKGROUND] == 0).all()
    assert ((cover[labels == anchor.AMBIGUOUS] > 0) & (cover[labels == anchor.AMBIGUOUS] < 0.5)).all()


def test_targets_are_sums_of_word_embeddings():
    tok = WordTokenizer()
    emb = torch.randn(20, 6)
    facts = one_object_scene()
    targets, kind = anchor.anchor_targets([facts], 16, emb, tok)
    labels = anchor.patch_labels(facts, 16)
    red, square, background = (tok(" " + w)["input_ids"][0] for w in ("red", "square", "background"))
    assert torch.equal(kind[0], torch.tensor(np.where(labels == 0, 1, np.where(labels == anchor.BACKGROUND, 0, -1))))
    assert torch.equal(targets[0, 8 * 16 + 8], emb[red] + emb[square])  # (0 + red) + square: one rounding either way
    assert torch.equal(targets[0, 0], emb[background])
    assert torch.equal(targets[0][kind[0] == -1], torch.zeros(int((kind[0] == -1).sum()), 6))


def test_fit_makes_every_patch_nearest_to_its_own_word():
    g = torch.Generator().manual_seed(0)
    words = torch.randn(4, 8, generator=g)            # 3 object names + background
    which = torch.randint(0, 4, (2, 64), generator=g)
    kind = torch.where(which == 3, 0, 1)
    feats = torch.nn.functional.one_hot(which, 4).float() + 0.05 * torch.randn(2, 64, 4, generator=g)
    targets = words[which]
    projector = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
    before = anchor.word_accuracy(projector, feats, targets, kind)
    loss = anchor.fit_projector(projector, feats, targets, kind, steps=300, lr=1e-2, batch=64)
    after = anchor.word_accuracy(projector, feats, targets, kind)
    assert loss < 0.05
    assert after == {"object": 1.0, "background": 1.0}
    assert before != after


def test_fit_needs_objects_and_background():
    feats, targets = torch.zeros(1, 4, 3), torch.zeros(1, 4, 2)
    with pytest.raises(ValueError, match="object and background"):
        anchor.fit_projector(torch.nn.Linear(3, 2), feats, targets, torch.zeros(1, 4, dtype=torch.long), steps=1)
