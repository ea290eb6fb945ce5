"""Caption metrics against hand-computed values and independent implementations of BLEU and CIDEr-D."""

import math
from collections import Counter

import pytest

from trainwell.tasks.captioning.scoring import (
    best_constant_caption,
    caption_metrics,
    cider_d,
    entity_recall,
    ptb_tokenize,
)


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def reference_bleu(hyps: dict, refs: dict, n_max: int = 4) -> list[float]:
    """Corpus BLEU (Papineni et al.): clipped n-gram precision summed over the corpus, geometric mean of orders
    1..n, brevity penalty with the reference length closest to each hypothesis (ties: the shorter)."""
    matches, totals = [0] * n_max, [0] * n_max
    hyp_len = ref_len = 0
    for key, hyp in hyps.items():
        h = hyp.split()
        rs = [r.split() for r in refs[key]]
        hyp_len += len(h)
        ref_len += min((len(r) for r in rs), key=lambda x: (abs(x - len(h)), x))
        for n in range(1, n_max + 1):
            counts = ngrams(h, n)
            best = Counter()
            for r in rs:
                best |= ngrams(r, n)
            matches[n - 1] += sum(min(c, best[g]) for g, c in counts.items())
            totals[n - 1] += max(len(h) - n + 1, 0)
    bp = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    out, log_sum = [], 0.0
    for n in range(n_max):
        log_sum += math.log(matches[n] / totals[n])
        out.append(bp * math.exp(log_sum / (n + 1)))
    return out


def reference_cider_d(hyps: dict, refs: dict, sigma: float = 6.0) -> float:
    """CIDEr-D (Vedantam et al.; the coco-caption variant): tf-idf n-gram vectors (raw counts × log(N / df)),
    hypothesis counts clipped by the reference's, Gaussian length penalty, mean over n = 1..4 and references, ×10."""
    keys = list(hyps)
    num_images = len(keys)
    df = Counter()
    for key in keys:
        seen = set()
        for r in refs[key]:
            for n in range(1, 5):
                seen |= set(ngrams(r.split(), n))
        df.update(seen)

    def vec(words: list[str], n: int) -> dict:
        return {g: c * (math.log(num_images) - math.log(max(1.0, df[g]))) for g, c in ngrams(words, n).items()}

    scores = []
    for key in keys:
        h = hyps[key].split()
        total = 0.0
        for r in refs[key]:
            rw = r.split()
            penalty = math.exp(-((len(h) - len(rw)) ** 2) / (2 * sigma**2))
            for n in range(1, 5):
                vh, vr = vec(h, n), vec(rw, n)
                dot = sum(min(vh[g], vr.get(g, 0.0)) * vr.get(g, 0.0) for g in vh)
                nh, nr = math.sqrt(sum(v * v for v in vh.values())), math.sqrt(sum(v * v for v in vr.values()))
                total += penalty * (dot / (nh * nr) if nh and nr else dot) / 4
        scores.append(10 * total / len(refs[key]))
    return sum(scores) / len(scores)


HYPS = {1: "a dog on a red bench", 2: "the cat sits near a tree", 3: "a man rides a bike", 4: "a boat on the water"}
REFS = {
    1: ["a dog on a bench", "a puppy sits on a red bench", "there is a dog on a red bench"],
    2: ["a cat near a tree", "the kitten sits by a tree"],
    3: ["a man riding a bicycle", "a guy rides a bike down a road", "a man on a bike"],
    4: ["a small boat on the water", "a ship on a lake"],
}


def test_bleu_by_hand_on_one_sentence() -> None:
    # "the cat the cat" vs "the cat is here": unigrams clipped 2/4, bigrams 1/3, equal lengths (no penalty)
    got = caption_metrics({0: "the cat the cat"}, {0: ["the cat is here"]})
    assert got["bleu_1"] == pytest.approx(0.5, rel=1e-6)
    assert got["bleu_2"] == pytest.approx(math.sqrt(0.5 / 3), rel=1e-6)


def test_bleu_matches_an_independent_implementation() -> None:
    got = caption_metrics(HYPS, REFS)
    want = reference_bleu(HYPS, REFS)
    for n in range(4):
        assert got[f"bleu_{n + 1}"] == pytest.approx(want[n], rel=1e-6)


def test_brevity_penalty_applies() -> None:
    hyps = {0: "a dog"}
    refs = {0: ["a dog on a bench"]}
    # clipped precision 1; BP = exp(1 - 5/2)
    assert caption_metrics(hyps, refs)["bleu_1"] == pytest.approx(math.exp(1 - 5 / 2), rel=1e-6)


def test_cider_d_matches_an_independent_implementation() -> None:
    assert caption_metrics(HYPS, REFS)["cider_d"] == pytest.approx(reference_cider_d(HYPS, REFS), rel=1e-9)


def test_cider_d_is_zero_when_every_image_has_the_same_references() -> None:
    # every n-gram occurs in every image's references: idf = log(N / N) = 0
    refs = {k: ["a dog on a bench", "a cat"] for k in range(3)}
    hyps = {k: "a dog on a bench" for k in range(3)}
    assert caption_metrics(hyps, refs)["cider_d"] == pytest.approx(0.0, abs=1e-12)


def test_rouge_l_by_hand() -> None:
    # LCS("a dog on a bench", "a dog near the bench") = "a dog bench" = 3; P = R = 3/5; F_beta = 3/5 for any beta
    got = caption_metrics({0: "a dog on a bench"}, {0: ["a dog near the bench"]})
    assert got["rouge_l"] == pytest.approx(0.6, rel=1e-6)


def test_ptb_style_tokenization() -> None:
    # brackets stay: PTBTokenizer -lowerCase writes -lrb-, which pycocoevalcap's list (-LRB-) does not remove
    assert ptb_tokenize("A Dog's T-shirt, don't (3.5)!") == "a dog 's t-shirt do n't -lrb- 3.5 -rrb-"
    assert ptb_tokenize('The "red" car... on a road.') == "the red car on a road"
    # raw text is tokenised before scoring: case and punctuation do not count
    assert caption_metrics({0: "A dog, on a bench."}, {0: ["a dog on a bench"]})["bleu_4"] == pytest.approx(1.0)


def test_entity_recall_counts_synonyms() -> None:
    captions = ["A puppy on a bench.", "a cat"]
    entities = [[("dog", "puppy"), ("bench",), ("tree",)], [("cat", "kitten")]]
    assert entity_recall(captions, entities) == pytest.approx(3 / 4)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="same image ids"):
        caption_metrics({0: "a"}, {1: ["a"]})
    with pytest.raises(ValueError, match="at least one reference"):
        caption_metrics({0: "a"}, {0: []})


def test_best_constant_caption_is_the_argmax_over_candidates() -> None:
    candidates = ["a dog on a bench", "a cat", "a man rides a bike", "a boat on the water"]
    caption, score = best_constant_caption(REFS, candidates)
    each = {c: caption_metrics(dict.fromkeys(REFS, c), REFS)["cider_d"] for c in candidates}
    assert score == pytest.approx(max(each.values()), rel=1e-12)
    assert each[caption] == pytest.approx(score, rel=1e-12)
    assert cider_d(HYPS, REFS) == pytest.approx(caption_metrics(HYPS, REFS)["cider_d"], rel=1e-12)
