"""Caption metrics: BLEU-1…4, ROUGE-L and CIDEr-D through ``pycocoevalcap``'s own scorers, plus entity recall.

``pycocoevalcap`` is the reference implementation of the COCO caption evaluation. Its scorers (Bleu, Rouge, Cider) are
pure Python; its ``PTBTokenizer`` runs Java (as METEOR and SPICE do, :mod:`.java_scorers`). So that these scores do
not depend on whether Java is installed, captions are tokenised by :func:`ptb_tokenize`, a pure-Python rendering of
what ``PTBTokenizer -lowerCase`` followed by pycocoevalcap's punctuation filter produces on caption text: lower case;
clitics split off (``dog's`` → ``dog 's``, ``don't`` → ``do n't``); hyphenated words and decimal numbers kept whole;
the punctuation tokens pycocoevalcap drops (:data:`PTB_PUNCTUATION`: full stops, commas, ``? ! : ;``, dashes,
quotes) removed. Brackets stay, as ``-lrb-``, ``-rrb-``, ``-lcb-``, ``-rcb-``, ``-lsb-``, ``-rsb-``: the Java
tokenizer lower-cases its ``-LRB-``, so the list's upper-case entries never match. On captions made of words,
numbers and that punctuation the result is token-for-token the same (checked against pycocoevalcap's
``PTBTokenizer`` in the tests when Java is present); it differs where Stanford's tokenizer applies rules this does
not (abbreviations such as ``u.s.`` or ``p.m.``, URLs, ``&amp;``-style entities, quotes inside words), which are
rare in captions and change scores in the third decimal at most on COCO-style text.

CIDEr here is pycocoevalcap's ``Cider``, which is CIDEr-D (clipped n-gram counts, a Gaussian length penalty with
σ = 6, ×10); its document frequencies come from *all* references passed in one call, so it must be computed over
the whole evaluation set at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
"""The tokens pycocoevalcap removes after PTB tokenisation (``pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS``)."""

_CLITIC = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|[a-z0-9]+(?:[-.][a-z0-9]+)*|\.\.\.|--|\S")
# PTBTokenizer -lowerCase writes brackets as lower-case -lrb- …, which pycocoevalcap's upper-case list does not drop
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-", '"': "''"}

METRIC_NAMES = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d")


def ptb_tokenize(caption: str) -> str:
    """Lower-case, PTB-style tokens joined by single spaces, without punctuation (see the module docstring)."""
    text = _CLITIC.sub(r" \1", caption.lower().replace("\n", " "))
    tokens = (_BRACKETS.get(token, token) for token in _TOKEN.findall(text))
    return " ".join(token for token in tokens if token not in PTB_PUNCTUATION)


def caption_metrics(predictions: Mapping[int, str], references: Mapping[int, Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-1…4 (``closest`` reference length, as COCO), mean ROUGE-L and CIDEr-D.

    Args:
        predictions: one generated caption per image id (raw text; tokenised here).
        references: the reference captions of every image id in ``predictions`` (raw text; at least one each).

    Returns:
        ``{"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider_d"}``, each as pycocoevalcap computes it
        (BLEU and ROUGE-L in [0, 1], CIDEr-D in [0, 10]).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if set(predictions) != set(references):
        missing = sorted(set(predictions) ^ set(references))[:5]
        raise ValueError(f"predictions and references must cover the same image ids; they differ at e.g. {missing}.")
    if not predictions:
        raise ValueError("caption_metrics() needs at least one prediction.")
    empty = [image_id for image_id, refs in references.items() if not refs]
    if empty:
        raise ValueError(f"Every image needs at least one reference caption; image ids {empty[:5]} have none.")
    res = {image_id: [ptb_tokenize(caption)] for image_id, caption in predictions.items()}
    gts = {image_id: [ptb_tokenize(caption) for caption in references[image_id]] for image_id in predictions}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    values = [*bleu, rouge, cider]
    return {name: float(value) for name, value in zip(METRIC_NAMES, values, strict=True)}


def entity_recall(captions: Sequence[str], entity_words: Sequence[Sequence[Sequence[str]]]) -> float:
    """Share of ground-truth entities named in the captions (micro average over all entities).

    Args:
        captions: ``N`` generated captions.
        entity_words: for each caption, its entities; each entity as the words that name it (its synonyms, e.g.
            ``("dog", "puppy")``). An entity counts as named when any of its words is a token of the caption.

    Returns:
        named entities / all entities, in [0, 1]; ``nan`` when there are no entities at all.
    """
    if len(captions) != len(entity_words):
        raise ValueError(f"entity_recall(): {len(captions)} captions but {len(entity_words)} entity lists.")
    named = total = 0
    for caption, entities in zip(captions, entity_words, strict=True):
        words = set(ptb_tokenize(caption).split())
        total += len(entities)
        named += sum(any(word in words for word in synonyms) for synonyms in entities)
    return named / total if total else float("nan")


def cider_d(predictions: Mapping[int, str], references: Mapping[int, Sequence[str]]) -> float:
    """CIDEr-D alone (pycocoevalcap's ``Cider``) of raw-text predictions against raw-text references."""
    from pycocoevalcap.cider.cider import Cider

    res = {image_id: [ptb_tokenize(caption)] for image_id, caption in predictions.items()}
    gts = {image_id: [ptb_tokenize(caption) for caption in references[image_id]] for image_id in predictions}
    return float(Cider().compute_score(gts, res)[0])


def best_constant_caption(references: Mapping[int, Sequence[str]], candidates: Sequence[str]) -> tuple[str, float]:
    """The candidate with the highest CIDEr-D when it is predicted for every image, and that score.

    The baseline a captioner must beat: a model that ignores its input can at best emit the one caption that
    scores highest on average. Candidates are raw text (e.g. every reference of the set, plus short phrases).
    """
    if not candidates:
        raise ValueError("best_constant_caption() needs at least one candidate.")
    best = ("", float("-inf"))
    for caption in dict.fromkeys(candidates):
        score = cider_d({image_id: caption for image_id in references}, references)
        if score > best[1]:
            best = (caption, score)
    return best
