"""The pinned npm packages behind the emoji image set, and readers that turn them into captioned items.

Three picture sources and one keyword source (all permissive; see DATA.md, "Images with captions"):

- ``emoji-datasource-google@16.0.0``: Noto emoji as 64x64 PNGs (base emoji and skin-tone variants) and
  ``emoji.json`` (names, Unicode categories and subcategories). Images Apache-2.0, metadata MIT.
- ``@iconify-json/noto@1.2.9``: the same Noto designs as SVG. Apache-2.0.
- ``@iconify-json/fluent-emoji-flat@1.2.6``: Microsoft's Fluent flat emoji as SVG. MIT.
- ``emojilib@4.0.3``: keywords per emoji, for richer captions. MIT.

Each picture is matched to its emoji by Unicode code points (skin-tone modifiers and variation selectors
removed), falling back to its name, so the same emoji gets the same name, category and split key in
every source.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from arrowdiff.errors import ArrowDiffError
from arrowdiff.image.captions import EmojiRecord


@dataclass(frozen=True)
class Package:
    """One pinned npm tarball."""

    spec: str  # what `npm pack` is given
    tarball: str  # the file `npm pack` writes
    sha256: str  # of the tarball, checked before use
    licence: str  # SPDX id of the pictures or data it contributes
    url: str  # where the licence is stated


PACKAGES: dict[str, Package] = {
    "emoji-datasource-google": Package(
        "emoji-datasource-google@16.0.0",
        "emoji-datasource-google-16.0.0.tgz",
        "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
        "Apache-2.0",
        "https://github.com/googlefonts/noto-emoji/blob/main/LICENSE",
    ),
    "noto": Package(
        "@iconify-json/noto@1.2.9",
        "iconify-json-noto-1.2.9.tgz",
        "3e918d88fc945c0bb3d468dbace6f88caef67f01c9f0e7bcae0915a042e8f1ad",
        "Apache-2.0",
        "https://github.com/googlefonts/noto-emoji/blob/main/svg/LICENSE",
    ),
    "fluent-emoji-flat": Package(
        "@iconify-json/fluent-emoji-flat@1.2.6",
        "iconify-json-fluent-emoji-flat-1.2.6.tgz",
        "7d064769dee690815f823bc5bcc511d957198caf9f5edd8dd9c1aa48a6aeb175",
        "MIT",
        "https://github.com/microsoft/fluentui-emoji/blob/main/LICENSE",
    ),
    "emojilib": Package(
        "emojilib@4.0.3",
        "emojilib-4.0.3.tgz",
        "7f9a6b43cff31d18985b7d65d11faba5bd971cbcc60020cf6d09322fbaaaf303",
        "MIT",
        "https://github.com/muan/emojilib/blob/main/LICENSE",
    ),
}

# picture source name -> (package, art style named in captions)
SOURCES: dict[str, tuple[str, str]] = {
    "noto-png": ("emoji-datasource-google", "noto"),
    "noto-svg": ("noto", "noto"),
    "fluent-flat-svg": ("fluent-emoji-flat", "fluent flat"),
}

SKIN_TONES = {
    "1f3fb": "light skin tone",
    "1f3fc": "medium-light skin tone",
    "1f3fd": "medium skin tone",
    "1f3fe": "medium-dark skin tone",
    "1f3ff": "dark skin tone",
}
# Name suffixes that carry a skin tone where an icon has no code points (longest first).
_TONE_SUFFIXES = (
    ("-medium-light-skin-tone", "1f3fc"),
    ("-medium-dark-skin-tone", "1f3fe"),
    ("-light-skin-tone", "1f3fb"),
    ("-medium-skin-tone", "1f3fd"),
    ("-dark-skin-tone", "1f3ff"),
    ("-medium-light", "1f3fc"),
    ("-medium-dark", "1f3fe"),
    ("-light", "1f3fb"),
    ("-medium", "1f3fd"),
    ("-dark", "1f3ff"),
    ("-tone1", "1f3fb"),
    ("-tone2", "1f3fc"),
    ("-tone3", "1f3fd"),
    ("-tone4", "1f3fe"),
    ("-tone5", "1f3ff"),
)
_VARIATION_SELECTORS = {"fe0e", "fe0f"}


@dataclass(frozen=True)
class SourceItem:
    """One picture before rasterisation: its record and its encoded bytes."""

    record: EmojiRecord
    kind: str  # "png" or "svg"
    data: bytes
    hflip: bool = False  # mirror after rendering (Iconify aliases with hFlip)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_packages(downloads: Path, names: tuple[str, ...] = tuple(PACKAGES)) -> dict[str, Path]:
    """Make sure every pinned tarball is in ``downloads`` (``npm pack`` if missing) and matches its sha256."""
    downloads = Path(downloads)
    downloads.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        pkg = PACKAGES[name]
        path = downloads / pkg.tarball
        if not path.is_file():
            if shutil.which("npm") is None:
                raise ArrowDiffError(
                    f"{path} is missing and npm is not installed; install npm (apt-get install npm) or copy "
                    f"the tarball there (`npm pack {pkg.spec}` on another machine)"
                )
            proc = subprocess.run(
                ["npm", "pack", "--silent", pkg.spec], cwd=downloads, capture_output=True, text=True
            )
            if proc.returncode != 0 or not path.is_file():
                raise ArrowDiffError(f"`npm pack {pkg.spec}` failed in {downloads}: {proc.stderr.strip()}")
        got = sha256_file(path)
        if got != pkg.sha256:
            raise ArrowDiffError(
                f"{path}: sha256 {got} is not the pinned {pkg.sha256}; delete it and fetch again"
            )
        paths[name] = path
    return paths


def read_tar_members(path: Path, wanted: re.Pattern[str]) -> dict[str, bytes]:
    """The bytes of every regular file in the .tgz at ``path`` whose name fully matches ``wanted``."""
    out = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if member.isfile() and wanted.fullmatch(member.name):
                f = tar.extractfile(member)
                if f is not None:
                    out[member.name] = f.read()
    return out


def split_codepoints(cps: str) -> list[str]:
    """``"1F44B-1F3FD"`` -> ``["1f44b", "1f3fd"]``."""
    return [c.lower() for c in cps.replace("_", "-").split("-") if c]


def base_codepoints(cps: str) -> str:
    """Code points without skin-tone modifiers and variation selectors (kept if nothing else is left)."""
    parts = [c for c in split_codepoints(cps) if c not in SKIN_TONES and c not in _VARIATION_SELECTORS]
    if not parts:
        parts = [c for c in split_codepoints(cps) if c not in _VARIATION_SELECTORS]
    return "-".join(parts)


def skin_tone_of(cps: str) -> str:
    """The skin tones in ``cps`` as words, in order, duplicates dropped (``""`` if none or a lone swatch)."""
    parts = split_codepoints(cps)
    tones = [c for c in parts if c in SKIN_TONES]
    if not tones or len(tones) == len([c for c in parts if c not in _VARIATION_SELECTORS]):
        return ""
    return ", ".join(dict.fromkeys(SKIN_TONES[c] for c in tones))


def chars_of(cps: str) -> str:
    """The emoji string of ``cps``."""
    return "".join(chr(int(c, 16)) for c in split_codepoints(cps))


@dataclass
class EmojiIndex:
    """Names, categories and keywords of every known emoji, keyed by base code points."""

    names: dict[str, str]  # base code points -> CLDR-style name
    categories: dict[str, tuple[str, str]]  # base code points -> (category, subcategory)
    keywords: dict[str, tuple[str, ...]]  # base code points -> emojilib keywords
    by_name: dict[str, str]  # slug ("waving-hand") -> base code points

    def record(self, cps: str, fallback_name: str, fallback_category: str = "", **fields: str) -> EmojiRecord:
        """The record for a picture of ``cps`` (``""`` if unknown: then ``fallback_name`` decides)."""
        tone = ""
        if not cps:
            stem, tone_cp = strip_tone_suffix(fallback_name)
            cps = self.by_name.get(slug(stem), "")
            tone = SKIN_TONES[tone_cp] if tone_cp else ""
            if not cps:
                name = stem.replace("-", " ").lower()
                return EmojiRecord(key=name, name=name, category=fallback_category, skin_tone=tone, **fields)
        else:
            tone = skin_tone_of(cps)
        base = base_codepoints(cps)
        name = self.names.get(base) or fallback_name.replace("-", " ").lower()
        category, subcategory = self.categories.get(base, (fallback_category, ""))
        return EmojiRecord(
            key=name,
            name=name,
            category=category,
            subcategory=subcategory,
            keywords=self.keywords.get(base, ()),
            skin_tone=tone,
            codepoints=cps.lower(),
            **fields,
        )


def slug(name: str) -> str:
    """``"Waving Hand"`` / ``"waving_hand"`` -> ``"waving-hand"``."""
    return re.sub(r"[^a-z0-9#*]+", "-", name.lower()).strip("-")


def strip_tone_suffix(name: str) -> tuple[str, str]:
    """``"man-elf-tone3"`` -> ``("man-elf", "1f3fd")``; ``("apple", "")`` when there is none."""
    for suffix, cp in _TONE_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], cp
    return name, ""


def _iconify(tar_path: Path) -> tuple[dict, dict[str, str], dict[str, str]]:
    """(icons.json, icon name -> code points, icon name -> category) of an @iconify-json tarball."""
    files = read_tar_members(tar_path, re.compile(r"package/(icons|chars|metadata)\.json"))
    icons = json.loads(files["package/icons.json"])
    chars = json.loads(files["package/chars.json"])
    meta = json.loads(files.get("package/metadata.json", b"{}"))
    cats = {icon: cat for cat, names in meta.get("categories", {}).items() for icon in names}
    return icons, {icon: cps for cps, icon in chars.items()}, cats


def build_index(tarballs: dict[str, Path]) -> EmojiIndex:
    """Join emoji.json (categories), the Noto icon names (CLDR names) and emojilib (keywords)."""
    ds = read_tar_members(tarballs["emoji-datasource-google"], re.compile(r"package/emoji\.json"))
    emoji = json.loads(ds["package/emoji.json"])
    lib = read_tar_members(tarballs["emojilib"], re.compile(r"package/dist/emoji-en-US\.json"))
    emojilib = json.loads(lib["package/dist/emoji-en-US.json"])
    _, noto_cps, _ = _iconify(tarballs["noto"])

    names: dict[str, str] = {}
    categories: dict[str, tuple[str, str]] = {}
    keywords: dict[str, tuple[str, ...]] = {}
    by_name: dict[str, str] = {}
    for icon, cps in noto_cps.items():  # CLDR names first: "index-pointing-up"
        base = base_codepoints(cps)
        if not skin_tone_of(cps):
            names.setdefault(base, icon.replace("-", " "))
        by_name.setdefault(slug(icon), base)
    for char, words in emojilib.items():
        base = base_codepoints("-".join(f"{ord(c):x}" for c in char))
        if words:
            names.setdefault(base, words[0].replace("_", " ").strip())
            by_name.setdefault(slug(words[0]), base)
            keywords[base] = tuple(w.replace("_", " ") for w in words[1:])
    for e in emoji:
        base = base_codepoints(e["unified"])
        names.setdefault(base, e["name"].lower())
        categories[base] = (e["category"], e["subcategory"])
        for short in e.get("short_names", []):
            by_name.setdefault(slug(short), base)
    return EmojiIndex(names, categories, keywords, by_name)


def iter_noto_png(tar_path: Path, index: EmojiIndex) -> Iterator[SourceItem]:
    """The 64x64 Noto PNGs of emoji-datasource-google: every emoji and every skin-tone variant."""
    files = read_tar_members(tar_path, re.compile(r"package/(emoji\.json|img/google/64/[^/]+\.png)"))
    emoji = json.loads(files["package/emoji.json"])
    licence = PACKAGES["emoji-datasource-google"].licence
    for e in sorted(emoji, key=lambda e: e["sort_order"]):
        variants = [(e["unified"], e["image"], e.get("has_img_google", False))]
        for v in (e.get("skin_variations") or {}).values():
            variants.append((v["unified"], v["image"], v.get("has_img_google", False)))
        for cps, image, has in variants:
            data = files.get(f"package/img/google/64/{image}")
            if not has or data is None:
                continue
            rec = index.record(
                cps, e["name"], e["category"], source="noto-png", licence=licence, style="noto", icon=image
            )
            yield SourceItem(rec, "png", data)


def _svg(icons: dict, body: str, icon: dict) -> bytes:
    left, top = icon.get("left", icons.get("left", 0)), icon.get("top", icons.get("top", 0))
    width, height = icon.get("width", icons.get("width", 16)), icon.get("height", icons.get("height", 16))
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'viewBox="{left} {top} {width} {height}">{body}</svg>'
    ).encode()


def iter_iconify(tar_path: Path, index: EmojiIndex, source: str) -> Iterator[SourceItem]:
    """Every icon of an @iconify-json emoji set as a standalone SVG, plus the aliases that mirror an icon
    (Iconify draws e.g. "pointing right" as "pointing left" with hFlip); plain aliases repeat a picture
    and are skipped."""
    package, style = SOURCES[source]
    licence = PACKAGES[package].licence
    icons, icon_cps, cats = _iconify(tar_path)
    entries = [(name, name, False) for name in sorted(icons["icons"])]
    for name, alias in sorted(icons.get("aliases", {}).items()):
        mirror_only = alias.get("hFlip") and not alias.get("vFlip") and not alias.get("rotate")
        if mirror_only and alias.get("parent") in icons["icons"]:
            entries.append((name, alias["parent"], True))
    for name, parent, hflip in entries:
        icon = icons["icons"][parent]
        rec = index.record(
            icon_cps.get(name, ""),
            name,
            cats.get(name, cats.get(parent, "")),
            source=source,
            licence=licence,
            style=style,
            icon=name,
        )
        yield SourceItem(rec, "svg", _svg(icons, icon["body"], icon), hflip=hflip)


def iter_items(tarballs: dict[str, Path], sources: tuple[str, ...]) -> Iterator[SourceItem]:
    """Every picture of the chosen ``sources`` (names from :data:`SOURCES`), in a fixed order."""
    index = build_index(tarballs)
    for source in sources:
        package, _ = SOURCES[source]
        if source == "noto-png":
            yield from iter_noto_png(tarballs[package], index)
        else:
            yield from iter_iconify(tarballs[package], index, source)
