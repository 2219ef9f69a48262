"""Generated scenes: deterministic, pixels agree with the facts, questions are right and balanced."""
import random
import re

import numpy as np
import pytest

from dymu_eval.errors import ConfigError
from dymu_eval.offline import synthetic
from dymu_eval.offline.synthetic import COLOURS, make_scene, yes_no_questions


def _truth(q: str, facts) -> bool | None:
    """Independent reading of the question templates; None for templates it does not know."""
    if m := re.match(r"Is there a (\w+) (\w+) in (?:the|this) (?:image|picture)\?", q):
        a, b = m.groups()
        if a in COLOURS:
            return facts.has(shape=b, colour=a)
        if a == "exactly":
            return None
    if m := re.match(r"Is there a (\w+) in (?:the|this) (?:image|picture)\?", q):
        return facts.has(shape=m.group(1))
    if m := re.match(r"Is there anything (\w+) in", q):
        return facts.has(colour=m.group(1))
    if m := re.match(r"Is there exactly one (\w+) in", q):
        return facts.count(m.group(1)) == 1
    if m := re.match(r"Are there (\d) (\w+)s in", q):
        return facts.count(m.group(2)) == int(m.group(1))
    if m := re.match(r"Is the (\w+) (\w+)\?", q):
        return facts.unique(shape=m.group(1)).colour == m.group(2)
    if m := re.match(r"Is the (\w+) (\w+) on the (left|right) of the (\w+) (\w+)\?", q):
        a, b = facts.unique(m.group(2), m.group(1)), facts.unique(m.group(5), m.group(4))
        return (a.cx < b.cx) == (m.group(3) == "left")
    return None


def test_same_seed_same_scene_and_backgrounds_differ():
    a, fa = make_scene(11, size=224, background="busy")
    b, fb = make_scene(11, size=224, background="busy")
    assert np.array_equal(np.asarray(a), np.asarray(b)) and fa == fb
    plain, _ = make_scene(11, size=224, background="plain")
    noisy, _ = make_scene(11, size=224, background="noisy")
    std = {k: np.asarray(im, dtype=float).std(axis=(0, 1)).mean() for k, im in
           (("plain", plain), ("busy", a), ("noisy", noisy))}
    assert std["plain"] < std["busy"] and std["plain"] < std["noisy"]


@pytest.mark.parametrize("background", synthetic.BACKGROUNDS)
def test_pixels_match_the_facts(background):
    for seed in range(12):
        image, facts = make_scene(seed, background=background)
        px = np.asarray(image)
        assert image.size == (facts.size, facts.size) and 1 <= len(facts.objects) <= 5
        for o in facts.objects:
            assert tuple(px[int(o.cy), int(o.cx)]) == COLOURS[o.colour], (seed, o)


def test_pair_layout_is_left_to_right():
    for seed in range(10):
        _, facts = make_scene(seed, layout="pair")
        a, b = facts.objects
        assert a.cx < b.cx and a.shape != b.shape


def test_yes_no_questions_are_balanced_and_true():
    rng = random.Random(0)
    checked = 0
    for seed in range(40):
        _, facts = make_scene(seed)
        qa = yes_no_questions(facts, rng, 8)
        assert len(qa) == 8 and sum(q.answer == "Yes" for q in qa) == 4
        assert len({q.question for q in qa}) == 8
        for q in qa:
            truth = _truth(q.question, facts)
            if q.kind == "object":
                assert q.answer == "No"
            else:
                assert truth is not None, q.question
                assert (q.answer == "Yes") == truth, (seed, q)
                checked += 1
    assert checked > 250


def test_short_questions_and_caption():
    rng = random.Random(1)
    for seed in range(20):
        _, facts = make_scene(seed)
        for q in synthetic.short_questions(facts, rng):
            if m := re.match(r"How many (\w+)s are there\?", q.question):
                shape = None if m.group(1) == "shape" else m.group(1)
                assert int(q.answer) == facts.count(shape)
            if m := re.match(r"What color is the (\w+)\?", q.question):
                assert q.answer.lower() == facts.unique(shape=m.group(1)).colour
        text = synthetic.caption(facts).lower()
        assert facts.background in text
        for o in facts.objects:
            assert o.colour in text and o.shape in text


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="background='stripes'"):
        make_scene(0, background="stripes")
    with pytest.raises(ConfigError, match="layout='grid'"):
        make_scene(0, layout="grid")
