"""Caption records and the caption builder for the emoji image set.

A caption is made from a record's CLDR-style name, its Unicode category and subcategory, its skin tone and
a few emojilib keywords, through one of a few templates picked by a seeded ``random.Random``: varied
captions for the same picture help a text-to-image model generalise over phrasing (the caption
augmentation of DALL-E 3, Betker et al. 2023, in miniature). The same record and seed always give the
same caption.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# Templates and the fields each needs; make_caption only picks templates whose fields the record has.
TEMPLATES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("{name}", ()),
    ("{name}, {category}, {subcategory}", ("subcategory",)),
    ("{name}, {category}", ()),
    ("an emoji of {name}", ()),
    ("{name}, {style} emoji", ()),
    ("{name}, {keywords}", ("keywords",)),
    ("{name}, {subcategory}, {keywords}", ("subcategory", "keywords")),
    ("{style} emoji of {name}, {keywords}", ("keywords",)),
)

# Unicode emoji subcategories ("food-fruit") read better as phrases ("fruit").
_SUBCATEGORY_PHRASES = {
    "food-fruit": "fruit",
    "food-vegetable": "vegetable",
    "food-prepared": "prepared food",
    "food-asian": "asian food",
    "food-sweet": "sweets",
    "animal-mammal": "mammal",
    "animal-bird": "bird",
    "animal-bug": "bug",
    "animal-marine": "sea animal",
    "animal-reptile": "reptile",
    "animal-amphibian": "amphibian",
    "av-symbol": "audio and video symbol",
    "alphanum": "letters and numbers",
    "country-flag": "country flag",
    "subdivision-flag": "regional flag",
}


@dataclass(frozen=True)
class EmojiRecord:
    """What is known about one picture: its caption fields and where it came from."""

    key: str  # split key: the base emoji's name (skin tones removed), e.g. "waving hand"
    name: str  # CLDR-style name, e.g. "red apple"
    category: str  # Unicode emoji group, e.g. "Food & Drink" ("" if unknown)
    subcategory: str = ""  # Unicode emoji subgroup, e.g. "food-fruit"
    keywords: tuple[str, ...] = ()  # emojilib tags, e.g. ("fruit", "mac", "school")
    skin_tone: str = ""  # e.g. "medium skin tone" or "light skin tone, dark skin tone"
    source: str = ""  # "noto-png" | "noto-svg" | "fluent-flat-svg"
    licence: str = ""  # SPDX id of the picture's licence
    style: str = ""  # art style named in captions: "noto" or "fluent flat"
    icon: str = ""  # the picture's name in its package (file or icon name)
    codepoints: str = ""  # Unicode code points, lowercase hex joined by "-" ("" if unknown)


def phrase_category(category: str) -> str:
    """``"Food & Drink"`` -> ``"food and drink"``."""
    return category.replace("&", "and").lower().strip()


def phrase_subcategory(subcategory: str) -> str:
    """``"food-fruit"`` -> ``"fruit"``, ``"person-activity"`` -> ``"person activity"``."""
    return _SUBCATEGORY_PHRASES.get(subcategory, subcategory.replace("-", " ").lower().strip())


def display_name(record: EmojiRecord) -> str:
    """The name with its skin tone in CLDR form: ``"waving hand: medium skin tone"``."""
    return f"{record.name}: {record.skin_tone}" if record.skin_tone else record.name


def make_caption(record: EmojiRecord, rng: random.Random, max_keywords: int = 3) -> str:
    """One caption for ``record``, e.g. ``"red apple, food and drink, fruit"``.

    The template and up to ``max_keywords`` keywords (those not already in the name) are drawn from
    ``rng``; templates needing a field the record lacks (no subcategory, no keywords) are never drawn.
    """
    name_words = set(record.name.lower().split())
    keywords = [k for k in dict.fromkeys(record.keywords) if k.lower() not in name_words and k.strip()]
    have = {"subcategory": bool(record.subcategory), "keywords": bool(keywords)}
    usable = [tpl for tpl, needs in TEMPLATES if all(have[f] for f in needs)]
    template = rng.choice(usable)
    chosen = rng.sample(keywords, min(max_keywords, len(keywords))) if keywords else []
    category = phrase_category(record.category) or "emoji"
    caption = template.format(
        name=display_name(record),
        category=category,
        subcategory=phrase_subcategory(record.subcategory),
        keywords=", ".join(chosen),
        style=record.style or "an",
    )
    return " ".join(caption.split())


def caption_rng(seed: int, record: EmojiRecord) -> random.Random:
    """The RNG for ``record``'s stored caption: a pure function of the seed, source and icon, so a caption
    does not change when other records are added or removed (``random.Random`` hashes str seeds with
    SHA-512, stable across processes)."""
    return random.Random(f"{seed}:{record.source}:{record.icon}")
