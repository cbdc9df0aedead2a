from vlmq.cache import normalise
from vlmq.cache.normalize import question_digest


def test_case_space_quotes_and_trailing_punctuation():
    assert normalise("  What   COLOUR is the \u201ccat\u201d ?? ") == 'what colour is the "cat"'
    assert normalise("Is it the dog\u2019s ball?!") == "is it the dog's ball"
    assert normalise("what\tis\nthis\x1fthing.") == "what is this thing"


def test_words_that_change_meaning_are_kept():
    for q in ("is there no dog?", "is the cup on the left?", "are there 3 cats?", "isn't it red?"):
        assert normalise(q).split() == q.rstrip("?").split()


def test_empty_and_none():
    assert normalise(None) == "" == normalise("   ?  ")


def test_digest_is_stable():
    assert question_digest("what color is the dog") == question_digest(normalise("What color is the dog?"))
    assert len(question_digest("x")) == 40
