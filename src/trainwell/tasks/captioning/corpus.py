"""A synthetic captioning corpus that trains for real on a CPU: scenes, reference captions, CLIP-like features, and
the entities a (noisy) detector finds.

A *scene* holds 1–5 distinct objects, each with an optional attribute, and a relation from every object after the first
to the one before it (a chain). A small grammar renders several reference captions per scene, with noun, attribute and
relation synonyms, the chain read from either end with active or inverse relation phrasing ("a cup on a table next to a
chair" / "a seat beside a table under a mug") and varied openings, so a caption is not a lookup of the entity set. A
fixed random "CLIP-like" encoder maps the scene to a unit 512-d feature: the sum of object embeddings, attribute-object
bindings and subject-relation-object bindings (elementwise products of random vectors, which behave like fresh random
directions), plus scene noise; stored as float16 as ViECap's pre-extracted features are. The detector misses objects and
adds false positives; the hard prompt is built from what it reports.

Every sample is a pure function of ``(seed, split, index)`` (its own ``numpy`` generator seeded from the three).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OBJECTS: dict[str, tuple[str, ...]] = {
    # canonical noun (what the detector reports) -> the words a caption may use for it
    "dog": ("dog", "puppy"),
    "cat": ("cat", "kitten"),
    "man": ("man", "guy"),
    "woman": ("woman", "lady"),
    "car": ("car", "automobile"),
    "bicycle": ("bicycle", "bike"),
    "tree": ("tree",),
    "ball": ("ball",),
    "table": ("table",),
    "chair": ("chair", "seat"),
    "bench": ("bench",),
    "bird": ("bird",),
    "horse": ("horse", "pony"),
    "boat": ("boat", "ship"),
    "umbrella": ("umbrella",),
    "kite": ("kite",),
    "cup": ("cup", "mug"),
    "book": ("book",),
    "laptop": ("laptop", "computer"),
    "pizza": ("pizza",),
    "bus": ("bus",),
    "clock": ("clock",),
}
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "red": ("red",),
    "blue": ("blue",),
    "green": ("green",),
    "white": ("white",),
    "black": ("black",),
    "small": ("small", "little"),
    "large": ("large", "big"),
    "old": ("old",),
}
RELATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # relation -> (phrasings of "subject REL object", phrasings of the inverse "object INV subject")
    "on": (("on", "on top of"), ("under", "beneath")),
    "next_to": (("next to", "beside"), ("next to", "beside")),
    "behind": (("behind",), ("in front of",)),
    "near": (("near", "close to"), ("near", "close to")),
    "left_of": (("to the left of",), ("to the right of",)),
}
OBJECT_NAMES = tuple(OBJECTS)
ATTRIBUTE_NAMES = tuple(ATTRIBUTES)
RELATION_NAMES = tuple(RELATIONS)
SPLIT_IDS = {"train": 1, "val": 2, "test": 3}
PREFIXES = ("", "", "there is ", "a photo of ", "an image of ", "a picture showing ")
SINGLE_SUFFIXES = ("", "", " in the picture", " on its own")


@dataclass
class CorpusConfig:
    """How scenes, captions, features and detections are drawn (the synthetic parts of the ``data:`` section)."""

    seed: int = 0
    """Data seed: with the split and the index it determines every sample; it also fixes the encoder."""
    max_entities: int = 5
    """Objects per scene, drawn uniformly from 1 … max_entities (at most the 22 of the vocabulary)."""
    attribute_prob: float = 0.6
    """Chance that an object carries an attribute ("a red car")."""
    feature_dim: int = 512
    """Feature size of the CLIP-like encoder (ViT-B/32 gives 512)."""
    scene_noise: float = 0.35
    """Norm of the per-scene noise relative to the unit scene signal, before normalisation."""
    miss_prob: float = 0.15
    """Detector: chance that an object is not reported."""
    false_positive_prob: float = 0.2
    """Detector: chance of one extra, absent object in the report (a second one with this chance squared)."""


@dataclass(frozen=True)
class Scene:
    """Objects (canonical nouns), their attributes (``None`` = none) and relations ``(subject, relation, object)``
    as positions into ``objects``."""

    objects: tuple[str, ...]
    attributes: tuple[str | None, ...]
    relations: tuple[tuple[int, str, int], ...]


@dataclass(frozen=True)
class Sample:
    """One corpus sample: the scene, its reference captions, the float16 feature ``(D,)`` and the detections."""

    scene: Scene
    captions: tuple[str, ...]
    features: np.ndarray = field(repr=False)
    detected: tuple[str, ...]


def sample_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of sample ``index`` of ``split`` (``stream`` separates independent draws of one sample)."""
    if split not in SPLIT_IDS:
        raise ValueError(f"Unknown split {split!r}; expected one of {sorted(SPLIT_IDS)}.")
    return np.random.default_rng([seed, SPLIT_IDS[split], index, stream])


def draw_scene(rng: np.random.Generator, cfg: CorpusConfig) -> Scene:
    """1 … ``max_entities`` distinct objects, optional attributes, and a relation chain (object k to k - 1)."""
    num = int(rng.integers(1, min(cfg.max_entities, len(OBJECT_NAMES)) + 1))
    objects = tuple(OBJECT_NAMES[i] for i in rng.choice(len(OBJECT_NAMES), size=num, replace=False))
    attributes = tuple(
        ATTRIBUTE_NAMES[int(rng.integers(len(ATTRIBUTE_NAMES)))] if rng.random() < cfg.attribute_prob else None
        for _ in objects
    )
    relations = tuple((k, RELATION_NAMES[int(rng.integers(len(RELATION_NAMES)))], k - 1) for k in range(1, num))
    return Scene(objects, attributes, relations)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def render_caption(scene: Scene, rng: np.random.Generator) -> str:
    """One reference caption of ``scene``: the relation chain read from either end, with synonyms drawn from
    ``rng`` ("a cup on a table next to a chair" / "a seat beside a table under a mug"), every object named once."""
    nouns = [OBJECTS[o][int(rng.integers(len(OBJECTS[o])))] for o in scene.objects]
    adjectives = [None if a is None else ATTRIBUTES[a][int(rng.integers(len(ATTRIBUTES[a])))] for a in scene.attributes]

    def phrase(k: int) -> str:
        words = f"{adjectives[k]} {nouns[k]}" if adjectives[k] else nouns[k]
        return f"{_article(words)} {words}"

    prefix = PREFIXES[int(rng.integers(len(PREFIXES)))]
    if not scene.relations:
        text = prefix + phrase(0) + SINGLE_SUFFIXES[int(rng.integers(len(SINGLE_SUFFIXES)))]
    else:
        # relation k links object k (subject) to object k - 1: read from the last object with the forward
        # phrasings, or from the first with the inverse ones
        backward = rng.random() < 0.5
        order = range(len(scene.objects) - 1, -1, -1) if backward else range(len(scene.objects))
        words = []
        for step, k in enumerate(order):
            if step:
                subject = k + 1 if backward else k
                forward, inverse = RELATIONS[scene.relations[subject - 1][1]]
                options = forward if backward else inverse
                words.append(options[int(rng.integers(len(options)))])
            words.append(phrase(k))
        text = prefix + " ".join(words)
    return text[0].upper() + text[1:] + "."


class ClipLikeEncoder:
    """A fixed random map from a scene to a unit feature ``(D,)``: objects, attribute-object and
    subject-relation-object bindings, plus scene noise. Its tables depend on ``cfg.seed`` only."""

    def __init__(self, cfg: CorpusConfig) -> None:
        self.cfg = cfg
        rng = np.random.default_rng([cfg.seed, 0, 0, 7])
        d = cfg.feature_dim
        self.objects = rng.standard_normal((len(OBJECT_NAMES), d)) / np.sqrt(d)
        self.attributes = rng.standard_normal((len(ATTRIBUTE_NAMES), d))
        self.relations = rng.standard_normal((len(RELATION_NAMES), d))

    def encode(self, scene: Scene, rng: np.random.Generator) -> np.ndarray:
        """The float16 unit feature ``(D,)`` of ``scene``; the noise is drawn from ``rng``."""
        index = {name: i for i, name in enumerate(OBJECT_NAMES)}
        obj = [self.objects[index[o]] for o in scene.objects]
        signal = np.zeros(self.cfg.feature_dim)
        for k, attribute in enumerate(scene.attributes):
            signal += obj[k]
            if attribute is not None:  # binding: the attribute colours *this* object ("red dog" ≠ "red car")
                signal += 0.6 * obj[k] * self.attributes[ATTRIBUTE_NAMES.index(attribute)]
        for subject, relation, other in scene.relations:
            bound = obj[subject] * self.relations[RELATION_NAMES.index(relation)] * np.roll(obj[other], 1)
            signal += 0.5 * bound * np.sqrt(self.cfg.feature_dim)  # the product of two unit-scale vectors is small
        signal /= np.linalg.norm(signal)
        noise = rng.standard_normal(self.cfg.feature_dim)
        feature = signal + self.cfg.scene_noise * noise / np.linalg.norm(noise)
        return (feature / np.linalg.norm(feature)).astype(np.float16)


def detect(scene: Scene, rng: np.random.Generator, cfg: CorpusConfig) -> tuple[str, ...]:
    """What a detector reports for ``scene``: objects missed with ``miss_prob``, false positives, shuffled order."""
    found = [o for o in scene.objects if rng.random() >= cfg.miss_prob]
    absent = [o for o in OBJECT_NAMES if o not in scene.objects]
    extra = 0
    while extra < 2 and rng.random() < cfg.false_positive_prob:  # one extra with p, a second with p²
        extra += 1
    if extra:
        found += [absent[i] for i in rng.choice(len(absent), size=extra, replace=False)]
    return tuple(found[i] for i in rng.permutation(len(found)))


def make_sample(
    cfg: CorpusConfig, split: str, index: int, num_captions: int, encoder: ClipLikeEncoder | None = None
) -> Sample:
    """Sample ``index`` of ``split`` with ``num_captions`` reference captions (a pure function of its arguments).

    The scene, captions, feature noise and detections come from separate streams, so asking for more captions
    does not change the scene, the feature or the detections.
    """
    encoder = encoder if encoder is not None else ClipLikeEncoder(cfg)
    scene = draw_scene(sample_rng(cfg.seed, split, index, 0), cfg)
    caption_rng = sample_rng(cfg.seed, split, index, 1)
    captions = tuple(render_caption(scene, caption_rng) for _ in range(num_captions))
    features = encoder.encode(scene, sample_rng(cfg.seed, split, index, 2))
    detected = detect(scene, sample_rng(cfg.seed, split, index, 3), cfg)
    return Sample(scene, captions, features, detected)


def caption_words_of(obj: str) -> tuple[str, ...]:
    """The words a caption may use for the canonical object ``obj`` (its synonyms); itself for unknown nouns."""
    return OBJECTS.get(obj, (obj,))
