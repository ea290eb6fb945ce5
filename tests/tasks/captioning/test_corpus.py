"""The synthetic corpus: every sample a pure function of (seed, split, index), and the structure the grammar,
encoder and detector promise."""

import numpy as np
import pytest

from trainwell.tasks.captioning.corpus import (
    OBJECTS,
    ClipLikeEncoder,
    CorpusConfig,
    make_sample,
)
from trainwell.tasks.captioning.scoring import ptb_tokenize

CFG = CorpusConfig(seed=3)
ENCODER = ClipLikeEncoder(CFG)


def test_samples_are_pure_functions_of_seed_split_index() -> None:
    a = make_sample(CFG, "val", 17, 5, ENCODER)
    b = make_sample(CFG, "val", 17, 5, ClipLikeEncoder(CFG))  # a fresh encoder: same tables
    assert a.scene == b.scene and a.captions == b.captions and a.detected == b.detected
    assert np.array_equal(a.features, b.features)
    # more captions do not change the scene, the feature or the detections
    c = make_sample(CFG, "val", 17, 2, ENCODER)
    assert c.scene == a.scene and c.captions == a.captions[:2] and np.array_equal(c.features, a.features)
    # other indices, splits and seeds give other samples
    assert make_sample(CFG, "train", 17, 5, ENCODER).captions != a.captions
    assert make_sample(CFG, "val", 18, 5, ENCODER).captions != a.captions
    other = CorpusConfig(seed=4)
    assert not np.array_equal(make_sample(other, "val", 17, 5).features, a.features)


def test_scene_structure_and_every_object_named_in_every_caption() -> None:
    sizes = set()
    for index in range(300):
        sample = make_sample(CFG, "train", index, 3, ENCODER)
        scene = sample.scene
        sizes.add(len(scene.objects))
        assert len(set(scene.objects)) == len(scene.objects)
        # a relation chain: every object after the first relates to the one before
        assert [subject for subject, _, _ in scene.relations] == list(range(1, len(scene.objects)))
        assert all(0 <= parent < subject for subject, _, parent in scene.relations)
        for caption in sample.captions:
            words = set(ptb_tokenize(caption).split())
            assert caption.endswith(".") and caption[0].isupper()
            for obj in scene.objects:
                assert words & set(OBJECTS[obj]), (obj, caption)
        assert sample.features.dtype == np.float16 and sample.features.shape == (512,)
        assert abs(float(np.linalg.norm(sample.features.astype(np.float64))) - 1.0) < 2e-3
    assert sizes == {1, 2, 3, 4, 5}


def test_references_vary_in_words_and_order() -> None:
    distinct = []
    for index in range(200):
        sample = make_sample(CFG, "val", index, 5, ENCODER)
        if len(sample.scene.objects) >= 2:
            distinct.append(len(set(sample.captions)))
    # a caption is not a lookup of the entity set: most multi-object scenes get 4–5 different references
    assert np.mean(distinct) > 4.0


def test_features_encode_the_scene() -> None:
    """Two draws of one scene (different noise) are closer than two different scenes."""
    same, different = [], []
    for index in range(100):
        sample = make_sample(CFG, "val", index, 1, ENCODER)
        redraw = ENCODER.encode(sample.scene, np.random.default_rng(10_000 + index)).astype(np.float64)
        other = make_sample(CFG, "val", index + 1, 1, ENCODER).features.astype(np.float64)
        same.append(float(redraw @ sample.features.astype(np.float64)))
        different.append(float(other @ sample.features.astype(np.float64)))
    assert min(same) > 0.7
    assert np.mean(different) < 0.4


def test_detector_errors_match_the_configured_rates() -> None:
    exact = CorpusConfig(seed=3, miss_prob=0.0, false_positive_prob=0.0)
    for index in range(50):
        sample = make_sample(exact, "train", index, 1)
        assert sorted(sample.detected) == sorted(sample.scene.objects)
    missed = present = false_pos = 0
    num = 2000
    for index in range(num):
        sample = make_sample(CFG, "train", index, 1, ENCODER)
        present += len(sample.scene.objects)
        missed += sum(o not in sample.detected for o in sample.scene.objects)
        false_pos += sum(o not in sample.scene.objects for o in sample.detected)
    assert missed / present == pytest.approx(CFG.miss_prob, abs=0.02)
    # one extra with p, a second with p^2: expected p + p^2 per scene
    expected = CFG.false_positive_prob + CFG.false_positive_prob**2
    assert false_pos / num == pytest.approx(expected, abs=0.03)
