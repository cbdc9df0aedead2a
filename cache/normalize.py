"""The question text as the cache keys it: `normalise` and the exact-tier digest of it.

Normalising only removes what never changes an answer: case, runs of whitespace, curly quotes,
unicode compatibility forms and trailing punctuation. It never drops a word.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_QUOTES = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
})
_TRAILING = re.compile(r"[\s?？!！.。,;:…]+$")
_LEADING = re.compile(r"^[\s¿¡]+")


def normalise(question: str | None) -> str:
    """Lower-case, one space between words, straight quotes, no trailing '?', '!', '.', ',' ...

    >>> normalise("  What   COLOUR is the “cat” ?? ")
    'what colour is the "cat"'
    """
    if not question:
        return ""
    text = unicodedata.normalize("NFKC", question).translate(_QUOTES).lower()
    text = " ".join(text.split())  # also folds \t, \n and the ASCII separators \x1c-\x1f
    text = _LEADING.sub("", text)
    return _TRAILING.sub("", text)


def question_digest(normalised: str) -> str:
    """sha1 of the normalised question: the last part of an exact-tier key."""
    return hashlib.sha1(normalised.encode("utf-8")).hexdigest()
