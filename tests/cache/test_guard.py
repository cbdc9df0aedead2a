import pytest

from vlmq.cache import compatible, signature

NEAR_MISSES = [
    ("what color is the dog?", "what color is the cat?"),
    ("how many people are there?", "how many dogs are there?"),
    ("what is on the left?", "what is on the right?"),
    ("is the cup left of the plate?", "is the cup right of the plate?"),
    ("is there a dog?", "is there no dog?"),
    ("is there a dog?", "isn't there a dog?"),
    ("are there 2 dogs?", "are there 3 dogs?"),
    ("are there two dogs?", "are there 3 dogs?"),
    ("is the number 42?", "is the number 24?"),
    ("what is the man holding?", "what is the woman holding?"),
    ("what is the boy eating?", "what is the girl eating?"),
    ("is the dog chasing the cat?", "is the cat chasing the dog?"),
    ("is the dog bigger than the cat?", "is the dog smaller than the cat?"),
    ("what is above the door?", "what is below the door?"),
    ("what is behind the car?", "what is in front of the car?"),
    ("what is at the top of the page?", "what is at the bottom of the page?"),
    ("where is the dog?", "what is the dog?"),
    ("who is holding the umbrella?", "what is holding the umbrella?"),
    ("how many dogs are there?", "are there dogs?"),
    ("is the dog brown?", "are the dogs brown?"),
    ("what is the man holding?", "what is the man wearing?"),
    ("what color is the car?", "what color is the small car?"),
    ("is the light on?", "is the light off?"),
    ("is the red car parked?", "is the blue car parked?"),
    ("are all people sitting?", "are some people sitting?"),
    ("will it rain?", "is it raining?"),
    ("was the cake eaten?", "is the cake eaten?"),
]

PARAPHRASES = [
    ("what color is the dog?", "What colour is the dog in the picture?"),
    ("how many dogs are there?", "what is the number of dogs?"),
    ("how many people are in the image?", "How many persons can you see?"),
    ("what is the man holding?", "what does the man hold?"),
    ("what's on the table?", "what is on top of the table?"),
    ("what is the guy riding?", "what is the man riding?"),
    ("are there 3 cats?", "are there three cats?"),
    ("what is the grass color?", "what color is the grass?"),
    ("isn't the man wearing a hat?", "is the man not wearing a hat?"),
    ("is there a clock?", "do you see a clock?"),
    ("what is to the left of the car?", "what is on the left side of the car?"),
    ("what color is the man's shirt?", "what is the color of the shirt of the man?"),
    ("what kind of dog is this?", "what type of dog is this?"),
]


@pytest.mark.parametrize(("a", "b"), NEAR_MISSES)
def test_near_misses_are_incompatible(a, b):
    assert not compatible(a, b)
    assert not compatible(b, a)


@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_paraphrases_are_compatible(a, b):
    assert compatible(a, b), (signature(a), signature(b))
    assert compatible(b, a)


def test_signature_shape():
    assert signature("How many dogs are in the picture?") == ("count", ("dogs",))
    assert signature("Is the dog not sleeping?") == ("yn", ("dog", "not", "sleep"))
    assert signature("") is None
    assert signature("word " * 100) is None


def test_none_only_matches_none():
    assert compatible(None, None)
    assert not compatible(None, "what is this")
    assert not compatible("", "")
