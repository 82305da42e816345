"""A deterministic byte-level training corpus, generated rather than downloaded.

Lineage statistics only mean something on *trained* weights: independently trained models share
structure (frequent-byte embeddings, attention patterns) that random weights lack, and a model
trained on different data must really have seen different data. Each domain has its own lexicon,
Zipf-distributed word frequencies and grammar, so text from two domains differs in its byte,
word and syntax statistics, while one domain always yields the same bytes for the same seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import lru_cache

import torch

_PROSE_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "br", "st", "tr")
_PROSE_VOWELS = ("a", "e", "i", "o", "u", "ei", "ou", "é", "ø")
_PROSE_CODAS = ("", "", "", "n", "r", "s", "l", "nd", "rt")
_CODE_ONSETS = ("x", "z", "q", "c", "h", "w", "j", "y", "sh", "ch", "th", "qu")
_CODE_VOWELS = ("a", "o", "y", "i", "aa", "oo")
_CODE_CODAS = ("", "x", "k", "z", "_id", "_n", "2")
_TABLE_ONSETS = ("M", "K", "T", "P", "R", "S", "V", "Z")
_TABLE_VOWELS = ("A", "O", "U", "E", "Y")
_TABLE_CODAS = ("", "N", "R", "X")


def _zipf_weights(n: int, exponent: float) -> list[float]:
    return [1.0 / (rank + 2.7) ** exponent for rank in range(n)]


class _Lexicon:
    """Words of one class, drawn with Zipf-Mandelbrot frequencies."""

    def __init__(
        self,
        rng: random.Random,
        size: int,
        syllables: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]],
        max_syllables: int,
        exponent: float,
    ) -> None:
        onsets, vowels, codas = syllables
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < size:
            n = rng.randint(1, max_syllables)
            word = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(n))
            word += rng.choice(codas)
            if word not in seen:
                seen.add(word)
                words.append(word)
        self.words = words
        self.weights = _zipf_weights(size, exponent)

    def draw(self, rng: random.Random) -> str:
        return rng.choices(self.words, self.weights)[0]


def _prose(seed: int) -> Callable[[], str]:
    lex_rng = random.Random("prose-lexicon")
    syl = (_PROSE_ONSETS, _PROSE_VOWELS, _PROSE_CODAS)
    nouns = _Lexicon(lex_rng, 300, syl, 3, 1.1)
    verbs = _Lexicon(lex_rng, 120, syl, 2, 1.2)
    adjectives = _Lexicon(lex_rng, 80, syl, 3, 1.0)
    dets = ("the", "a", "every", "some", "this", "no")
    preps = ("of", "in", "under", "with", "near")
    rng = random.Random(f"prose-text-{seed}")

    def phrase() -> str:
        words = [rng.choice(dets)]
        if rng.random() < 0.4:
            words.append(adjectives.draw(rng))
        words.append(nouns.draw(rng))
        if rng.random() < 0.25:
            words += [rng.choice(preps), rng.choice(dets), nouns.draw(rng)]
        return " ".join(words)

    def sentence() -> str:
        text = f"{phrase()} {verbs.draw(rng)} {phrase()}"
        if rng.random() < 0.3:
            text += f", and {phrase()} {verbs.draw(rng)}"
        end = rng.choices((". ", "? ", "! ", ".\n"), (8, 1, 1, 2))[0]
        return text[0].upper() + text[1:] + end

    return sentence


def _code(seed: int) -> Callable[[], str]:
    lex_rng = random.Random("code-lexicon")
    syl = (_CODE_ONSETS, _CODE_VOWELS, _CODE_CODAS)
    names = _Lexicon(lex_rng, 150, syl, 2, 1.3)
    funcs = _Lexicon(lex_rng, 60, syl, 3, 1.1)
    ops = ("+", "-", "*", "<<", "&", "==")
    rng = random.Random(f"code-text-{seed}")

    def expr(depth: int = 0) -> str:
        r = rng.random()
        if depth < 2 and r < 0.3:
            return f"{funcs.draw(rng)}({expr(depth + 1)}, {expr(depth + 1)})"
        if depth < 2 and r < 0.55:
            return f"{expr(depth + 1)} {rng.choice(ops)} {expr(depth + 1)}"
        if r < 0.75:
            return str(rng.randint(0, 99))
        return names.draw(rng)

    def block() -> str:
        lines = [f"fn {funcs.draw(rng)}({names.draw(rng)}, {names.draw(rng)}) {{"]
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.3:
                lines.append(f"    if {expr()} {{ {names.draw(rng)} = {expr()}; }}")
            else:
                lines.append(f"    let {names.draw(rng)} = {expr()};")
        lines.append(f"    return {expr()};\n}}\n")
        return "\n".join(lines)

    return block


def _tables(seed: int) -> Callable[[], str]:
    lex_rng = random.Random("tables-lexicon")
    keys = _Lexicon(lex_rng, 40, (_TABLE_ONSETS, _TABLE_VOWELS, _TABLE_CODAS), 2, 0.9)
    rng = random.Random(f"tables-text-{seed}")

    def row() -> str:
        cells = [f"{keys.draw(rng)}:{rng.randint(0, 9999):04d}" for _ in range(rng.randint(2, 5))]
        return "|".join(cells) + "\n"

    return row


_GENERATORS: dict[str, Callable[[int], Callable[[], str]]] = {
    "prose": _prose,
    "code": _code,
    "tables": _tables,
}

#: Corpus domains. Models trained on different domains have really seen different data.
DOMAINS: tuple[str, ...] = tuple(_GENERATORS)


@lru_cache(maxsize=16)
def _corpus_bytes(domain: str, num_bytes: int, seed: int) -> bytes:
    unit = _GENERATORS[domain](seed)
    parts: list[bytes] = []
    total = 0
    while total < num_bytes:
        chunk = unit().encode("utf-8")
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)[:num_bytes]


def corpus(domain: str = "prose", num_bytes: int = 120_000, seed: int = 0) -> torch.Tensor:
    """``num_bytes`` bytes of synthetic ``domain`` text as a uint8 tensor (same args, same bytes)."""
    if domain not in _GENERATORS:
        raise ValueError(f"unknown corpus domain {domain!r}; known: {', '.join(DOMAINS)}")
    if num_bytes <= 0:
        raise ValueError("num_bytes must be positive")
    data = _corpus_bytes(domain, num_bytes, seed)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)
