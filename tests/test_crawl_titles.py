"""MovieLens title normalisation for OMDb lookups (pure functions)."""

import pytest

from mmiris.crawl.titles import (
    article_to_front,
    omdb_year,
    parse_title,
    similarity,
    split_year,
    title_key,
    title_variants,
)


@pytest.mark.parametrize(
    "given, expected",
    [
        ("Shawshank Redemption, The", "The Shawshank Redemption"),
        ("Walk in the Clouds, A", "A Walk in the Clouds"),
        ("American Werewolf in Paris, An", "An American Werewolf in Paris"),
        ("Cité des enfants perdus, La", "La Cité des enfants perdus"),
        ("Superweib, Das", "Das Superweib"),
        ("Associé, L'", "L'Associé"),
        ("Rage: Carrie 2, The", "The Rage: Carrie 2"),
        ("Lord of the Rings, The: The Two Towers", "The Lord of the Rings: The Two Towers"),
        ("Toy Story", "Toy Story"),
        ("Bell, Book and Candle", "Bell, Book and Candle"),  # a comma that is not an article
        ("To Wong Foo, Thanks for Everything! Julie Newmar", "To Wong Foo, Thanks for Everything! Julie Newmar"),
    ],
)
def test_article_to_front(given, expected):
    assert article_to_front(given) == expected


def test_parse_title_year_alternatives_and_aka():
    p = parse_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)")
    assert p.main == "City of Lost Children, The"
    assert p.alternatives == ("Cité des enfants perdus, La",) and p.year == 1995
    assert title_variants(p) == [
        "The City of Lost Children",
        "La Cité des enfants perdus",
        "City of Lost Children",
        "Cité des enfants perdus",
    ]

    p = parse_title("Wisdom of Crocodiles, The (a.k.a. Immortality) (2000)")
    assert title_variants(p)[:2] == ["The Wisdom of Crocodiles", "Immortality"]

    p = parse_title("Associate, The (L'Associe)(1982)")  # no space before the year
    assert (p.main, p.alternatives, p.year) == ("Associate, The", ("L'Associe",), 1982)

    p = parse_title("Eighth Day, The (Le Huitième jour ) (1996)", year=1997)  # explicit year wins
    assert p.year == 1997 and p.alternatives == ("Le Huitième jour",)

    assert parse_title("Toy Story").year is None
    assert split_year("Toy Story (1995)") == ("Toy Story", 1995)
    assert split_year("Some Series (1995-1998)") == ("Some Series", 1995)


def test_variants_are_deduplicated_by_key():
    p = parse_title("Shower (Shower) (1999)")
    assert title_variants(p) == ["Shower"]


@pytest.mark.parametrize(
    "given, expected",
    [
        ("Up Close and Personal (1996)", ["Up Close and Personal", "Up Close & Personal"]),
        ("Fun & Fancy Free (1947)", ["Fun & Fancy Free", "Fun and Fancy Free"]),
        ("House on Haunted Hill, The (1999)", ["The House on Haunted Hill", "House on Haunted Hill"]),
        ("Wes Craven's New Nightmare (1994)", ["Wes Craven's New Nightmare", "New Nightmare"]),
        ("Schindler's List (1993)", ["Schindler's List"]),  # a one-word owner is part of the title
    ],
)
def test_spelling_variants(given, expected):
    assert title_variants(parse_title(given)) == expected


def test_title_key_and_similarity():
    assert title_key("Le Dîner de Cons!") == "le diner de cons"
    assert similarity("Jerry & Tom", "Jerry and Tom") < 1.0
    assert similarity("The Shawshank Redemption", "shawshank redemption") == pytest.approx(1.0)
    assert similarity("Star Trek: The Wrath of Khan", "Star Trek II: The Wrath of Khan") > 0.9
    assert similarity("Toy Story", "Heat") < 0.5
    assert similarity("", "Heat") == 0.0
    assert similarity(
        "Interview with the Vampire", "Interview with the Vampire: The Vampire Chronicles"
    ) == pytest.approx(0.95)
    assert similarity("Quest for Camelot", "The Magic Sword: Quest for Camelot") == pytest.approx(0.95)


def test_omdb_year():
    assert omdb_year("1995") == 1995
    assert omdb_year("1995–1998") == 1995
    assert omdb_year("N/A") is None and omdb_year(None) is None
