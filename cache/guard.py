"""The guard of the semantic tier: may the answer to one question be served for another?

Embeddings put "what color is the cat?" next to "what color is the dog?" (cosine 0.75) and a true
paraphrase only a little nearer (0.90): no threshold separates them. So a semantic hit must also
pass `compatible(a, b)`: both questions reduce to the same *signature*, which is

- the question's kind: what/which, who, whose, where, when, why, how, how many (counting),
  yes/no, or other (imperatives such as "describe the image");
- the ordered sequence of its content words, after canonicalisation.

Canonicalisation removes only what cannot change the answer: articles, present-tense be/do,
"there"/"it", "of"; filler phrases about the picture itself ("in this photo", "can you see",
"shown", "visible"); contractions are expanded; a few exact synonyms are unified (colour/color,
sofa/couch, guy/man, lady/woman, kid/child, tv/television, bike/bicycle, underneath/under ...);
number words become digits; "-ing" verbs and a few irregular forms become their base ("holding",
"held" -> "hold"); "the man's shirt" becomes "shirt man" like "the shirt of the man".

Everything else is kept and must match, in order: colours, numbers and ordinals, negation
(no/not/n't/never/none/nothing/without), spatial words (left/right/top/bottom/above/below/behind/
front/under/on/in/near/...), comparatives, quantifiers (all/some/every/both/only/most/...),
modal and past-tense markers (can/will/should/was/did ...), gendered and person words
(man/woman/boy/girl/he/she/his/her ...), singular vs plural, every noun, verb and adjective. The
order matters: "is the dog chasing the cat" and "is the cat chasing the dog" have the same words.

A question the guard cannot reduce confidently (empty content on one side only, unknown
punctuation inside, a very long text) simply does not match: the guard trades recall for never
answering one question with another's answer.
"""

from __future__ import annotations

import re
from functools import lru_cache

from vlmq.cache.normalize import normalise

# --- contractions ------------------------------------------------------------------------

_CONTRACTIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r) for p, r in [
        (r"\bo'clock\b", "oclock"),
        (r"\bcan't\b", "can not"),
        (r"\bcannot\b", "can not"),
        (r"\bwon't\b", "will not"),
        (r"\bshan't\b", "shall not"),
        (r"\bain't\b", "is not"),
        (r"\b(\w+)n't\b", r"\1 not"),
        (r"\b(what|who|where|when|why|how|it|that|there|here|this|he|she|which)'s\b", r"\1 is"),
        (r"\b(\w+)'re\b", r"\1 are"),
        (r"\b(\w+)'ll\b", r"\1 will"),
        (r"\b(\w+)'ve\b", r"\1 have"),
        (r"\b(\w+)'d\b", r"\1 would"),
        (r"\bi'm\b", "i am"),
    ]
]

# --- phrases (applied to the space-joined tokens, in order) -------------------------------

_PICTURE = r"(?:picture|pictures|image|images|photo|photos|photograph|pic|pics|scene|shot|frame|snapshot|img)"
_PHRASES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r) for p, r in [
        # requests and politeness around the question
        (r"^(?:please )?(?:can|could|would) you (?:please )?tell me ", ""),
        (r"^(?:please )?(?:can|could|would) you (?:please )?(?:say|identify) ", ""),
        (r"^(?:please )?tell me ", ""),
        (r"^do you know ", ""),
        (r"^please ", ""),
        (r" please$", ""),
        # the picture itself
        (rf"\b(?:in|on|inside|within|from|of) (?:the|this|that) {_PICTURE}\b", ""),
        (r"\b(?:can|do|could) you see\b", ""),
        (r"\byou can see\b", ""),
        (r"\bcan be seen\b", ""),
        (r"\b(?:is|are) (?:shown|visible|pictured|depicted|seen|displayed)\b", r""),
        (r"\b(?:shown|visible|pictured|depicted|displayed)\b", ""),
        (r"\b(?:is|are) (?:located)\b", ""),
        (r"\blocated\b", ""),
        # wh-phrases
        (r"\bwhat (?:kind|type|sort|variety) of\b", "what"),
        (r"\bwhich (?:kind|type|sort|variety) of\b", "what"),
        (r"\bwhich one\b", "which"),
        (r"\b(?:what|which) (?:is|are|was|were) the (?:number|count|amount|total number) of\b", "how many"),
        (r"\bthe (?:total )?number of\b", "how many"),
        (r"^count (?:the )?", "how many "),
        # multi-word synonyms
        (r"\b(?:cell|mobile) ?phones\b", "phones"),
        (r"\b(?:cell|mobile) ?phone\b", "phone"),
        (r"\bsmart ?phone\b", "phone"),
        (r"\bno one\b", "nobody"),
        (r"\bnot anyone\b", "nobody"),
        (r"\bon top of\b", "on"),
        (r"\bin front of\b", "front"),
        (r"\bnext to\b", "beside"),
        (r"\b(?:turned|switched) (on|off)\b", r"\1"),
        # "on the left (side) (of)", "to the left of", "left of" are one place; "what is left" is not
        (r"\b(?:to|on|at) the (left|right)(?: hand)?(?: side)?(?: of)?\b", r"\1side"),
        (r"\b(left|right) (?:hand )?side of\b", r"\1side"),
        (r"\b(left|right) of\b", r"\1side"),
    ]
]

# --- words ---------------------------------------------------------------------------------

#: Dropped: they never change what is asked.
_STOP = frozenset({
    "a", "an", "the", "this", "that", "it", "its", "is", "are", "am", "be", "been", "being", "do",
    "does", "'s", "of", "there", "here", "any"
})

#: Past tense is kept as one marker ("was the cake eaten" asks more than "is the cake eaten");
#: modals (can, will, should ...) are kept as words.
_PAST = frozenset({"was", "were", "did"})

_WH = {
    "what": "what", "which": "what", "who": "who", "whom": "who", "whose": "whose",
    "where": "where", "when": "when", "why": "why", "how": "how",
}
_YES_NO_OPENERS = frozenset({
    "is", "are", "am", "was", "were", "do", "does", "did", "can", "could", "will", "would", "should",
    "shall", "may", "might", "must", "has", "have", "had",
})

_NUMBERS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16", "seventeen": "17",
    "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50",
    "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90", "hundred": "100",
    "thousand": "1000", "million": "1000000", "dozen": "12",
}

#: Exact synonyms (same referent in a question about a picture), to one canonical word.
_SYNONYMS = {
    "colour": "color", "colours": "colors", "coloured": "colored", "grey": "gray",
    "guy": "man", "guys": "men", "gentleman": "man", "gentlemen": "men", "fella": "man",
    "lady": "woman", "ladies": "women",
    "kid": "child", "kids": "children",
    "persons": "people", "individuals": "people", "individual": "person",
    "anybody": "anyone", "somebody": "someone", "everybody": "everyone", "noone": "nobody",
    "television": "tv", "telly": "tv", "tvs": "tv",
    "sofa": "couch", "sofas": "couches",
    "bicycle": "bike", "bicycles": "bikes",
    "motorbike": "motorcycle", "motorbikes": "motorcycles",
    "aeroplane": "airplane", "aeroplanes": "airplanes", "plane": "airplane", "planes": "airplanes",
    "automobile": "car", "automobiles": "cars",
    "cellphone": "phone", "cellphones": "phones", "telephone": "phone",
    "racquet": "racket", "racquets": "rackets",
    "photo": "picture", "photograph": "picture", "image": "picture", "pic": "picture", "img": "picture",
    "photos": "pictures", "photographs": "pictures", "images": "pictures", "pics": "pictures",
    "underneath": "under", "beneath": "under",
    "inside": "in", "within": "in",
    "alongside": "beside",
    "larger": "bigger", "largest": "biggest",
    "sliced": "cut",
    "seated": "sit", "asleep": "sleep", "opened": "open",
    "toward": "towards", "over": "above",
}

#: Attribute nouns: "what is the grass color" asks "what color is the grass".
_ATTRIBUTES = frozenset({
    "color", "colors", "brand", "name", "shape", "size", "material", "breed", "pattern", "flavor", "model",
})
#: "does the man look happy" asks "is the man happy"; not "does the man look at ...".
_COPULAS = frozenset({"look", "seem", "appear"})
_NOT_ADJECTIVE = frozenset({
    "at", "like", "for", "into", "through", "to", "towards", "up", "down", "out", "above", "around", "in",
    "on", "after",
})

_IRREGULAR = {
    "held": "hold", "holds": "hold", "worn": "wear", "wore": "wear", "wears": "wear",
    "eaten": "eat", "ate": "eat", "eats": "eat", "sat": "sit", "sits": "sit",
    "ridden": "ride", "rode": "ride", "rides": "ride", "carries": "carry", "carried": "carry",
    "thrown": "throw", "threw": "throw", "throws": "throw", "caught": "catch", "catches": "catch",
    "flown": "fly", "flew": "fly", "drunk": "drink", "drank": "drink",
    "written": "write", "wrote": "write", "taken": "take", "took": "take", "lying": "lie",
    "dying": "die", "tying": "tie",
}

#: Words ending in -ing that are not a verb's -ing form.
_ING_NOUNS = frozenset({
    "ceiling", "building", "string", "ring", "king", "thing", "something", "nothing", "anything",
    "everything", "clothing", "morning", "evening", "wing", "swing", "spring", "painting", "drawing",
    "wedding", "sibling", "pudding", "stuffing", "icing", "frosting", "railing", "sling", "sing",
    "bring", "sting", "wring", "ping", "ding", "ling", "awning", "bedding", "siding", "topping",
    "dressing", "filling", "earring", "lightning", "parking", "during", "shilling", "viking", "herring",
    "bowling", "boxing", "setting", "crossing", "opening", "landing", "clearing", "shopping", "fencing",
    "housing", "backing", "casing", "padding", "heading", "listing", "booking", "bearing", "parting",
    "stocking", "coating", "seating", "lighting", "marking", "flooring", "roofing", "ending", "footing"
})

#: After these, an -ing word is a noun ("the coating", "a crossing"), kept as it is.
_DETERMINERS = frozenset({
    "the", "a", "an", "this", "that", "these", "those", "his", "her", "its", "their", "my", "your", "our",
    "some", "any", "no", "every", "each",
})

#: Stems that take back their "e" once "-ing" is removed (riding -> ride).
_E_VERBS = frozenset({
    "ride", "drive", "make", "take", "smile", "bake", "skate", "dance", "wave", "use", "close", "serve",
    "type", "write", "hide", "slide", "move", "race", "hike", "bike", "shave", "wipe", "leave", "smoke",
    "share", "come", "give", "live", "love", "have", "chase", "graze", "glide", "dive", "strike",
    "bathe", "breathe", "change", "charge", "judge", "place", "pose", "rake", "raise", "save", "score",
    "shake", "shine", "snore", "trade", "wade", "face", "paste", "taste", "hope", "file",
    "pile", "stare", "rinse", "juice", "surprise", "practice", "sneeze", "squeeze"
})

_DOUBLE_OK = ("ll", "ss", "zz", "ff")
_TOKEN = re.compile(r"[a-z]+|[0-9]+(?:[.:,][0-9]+)*|'s")
_MAX_WORDS = 60


def _base(word: str, previous: str = "") -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("ing") and len(word) > 5 and word not in _ING_NOUNS and previous not in _DETERMINERS:
        stem = word[:-3]
        if stem + "e" in _E_VERBS:
            return stem + "e"
        if len(stem) > 2 and stem[-1] == stem[-2] and stem[-2:] not in _DOUBLE_OK:
            return stem[:-1]
        return stem
    return word


def _tokens(text: str) -> list[str]:
    for pattern, repl in _CONTRACTIONS:
        text = pattern.sub(repl, text)
    text = text.replace("-", " ")
    tokens = _TOKEN.findall(text)
    # possessive: "the man 's shirt" -> "shirt of man", like "the shirt of the man"
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "'s":
            if out and i + 1 < len(tokens) and tokens[i + 1] not in ("'s",):
                owner = out.pop()
                while out and out[-1] in ("the", "a", "an", "this", "that"):
                    out.pop()
                out.extend([tokens[i + 1], "of", owner])
                i += 2
                continue
            i += 1
            continue
        out.append(tok)
        i += 1
    return out


@lru_cache(maxsize=8192)
def signature(question: str) -> tuple[str, tuple[str, ...]] | None:
    """(kind, content words) of a question, or None when it cannot be reduced confidently."""
    text = normalise(question)
    if not text:
        return None
    words = _tokens(text)
    if not words or len(words) > _MAX_WORDS:
        return None
    opener = words[0] if words[0] in _YES_NO_OPENERS else ""
    joined = " ".join(words)
    for pattern, repl in _PHRASES:
        joined = pattern.sub(repl, joined)
    words = joined.split()
    if not words:
        return ("yn" if opener else "what", ())

    kind = "yn" if opener else "other"
    content: list[str] = []
    skip = 0
    for i, word in enumerate(words):
        if skip:
            skip -= 1
            continue
        if word in _WH and kind in ("other", "yn"):
            nxt = words[i + 1] if i + 1 < len(words) else ""
            if word == "how" and nxt in ("many", "much"):
                kind = "count"
                skip = 1
                continue
            kind = _WH[word]
            continue
        if word in _STOP:
            continue
        if word in _PAST:
            content.append("<past>")
            continue
        if word in ("no", "not", "never"):
            content.append("not")
            continue
        word = _NUMBERS.get(word, word)
        word = _SYNONYMS.get(word, word)
        word = _base(word, words[i - 1] if i else "")
        word = _SYNONYMS.get(word, word)
        content.append(word)

    if kind == "yn" and opener in ("do", "does", "did"):
        # "does the man look happy" -> "is the man happy"
        for j, word in enumerate(content[:-1]):
            if word in _COPULAS and content[j + 1] not in _NOT_ADJECTIVE:
                del content[j]
                break
    if kind == "yn" and len(words) > 1 and words[1] == "not" and content[:1] == ["not"] and len(content) > 2:
        # "isn't the man wearing a hat" -> "is the man not wearing a hat" (one-word subject)
        content = [content[1], "not", *content[2:]]
    if kind == "what" and len(content) >= 2 and content[-1] == "like":
        # "what is the weather like" -> "how is the weather"
        kind, content = "how", content[:-1]
    if kind == "what" and len(content) >= 2 and content[-1] in _ATTRIBUTES and content[0] not in _ATTRIBUTES:
        # "what is the grass color" / "the grass is what color" -> "what color is the grass"
        content = [content[-1], *content[:-1]]
    return (kind, tuple(content))


def compatible(a: str | None, b: str | None) -> bool:
    """True when the answer to question `a` may be served for question `b` (and back)."""
    if a is None or b is None:
        return a is None and b is None
    sa, sb = signature(a), signature(b)
    return sa is not None and sa == sb
