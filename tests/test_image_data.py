"""The caption-image set builder: captions, split, code points, rasterisation and the shard format, run end
to end on tiny fake npm tarballs (no downloads)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest

from arrowdiff.errors import ArrowDiffError, ConfigError, WeightFormatError
from arrowdiff.image import sources
from arrowdiff.image.captions import TEMPLATES, EmojiRecord, caption_rng, make_caption
from arrowdiff.image.dataset import build_image_set, held_out, main
from arrowdiff.image.raster import composite_on_white, render
from arrowdiff.image.shards import load_manifest, open_images, read_captions
from arrowdiff.image.sources import base_codepoints, skin_tone_of, strip_tone_suffix

# The `images` extra (cairosvg, Pillow) comes with `.[dev]`; skip without it, except in CI, where it must be.
if not os.environ.get("CI"):
    pytest.importorskip("cairosvg")
    pytest.importorskip("PIL.Image")
from PIL import Image as PIL_Image  # noqa: E402

APPLE = EmojiRecord(
    key="red apple",
    name="red apple",
    category="Food & Drink",
    subcategory="food-fruit",
    keywords=("fruit", "mac", "school"),
    source="noto-svg",
    style="noto",
    icon="red-apple",
)


def test_caption_is_deterministic_for_a_seed() -> None:
    a = [make_caption(APPLE, random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    many = {make_caption(APPLE, random.Random(s)) for s in range(200)}
    assert len(many) > 5  # the templates and keyword choices vary with the seed
    assert all(c.startswith("red apple") or "of red apple" in c for c in many)
    assert "red apple, food and drink, fruit" in many
    assert make_caption(APPLE, caption_rng(0, APPLE)) == make_caption(APPLE, caption_rng(0, APPLE))


def test_caption_templates_only_use_fields_the_record_has() -> None:
    bare = EmojiRecord(key="x", name="mystery", category="", source="s", icon="i")
    caps = {make_caption(bare, random.Random(s)) for s in range(100)}
    assert all("{" not in c and ", ," not in c and not c.endswith(",") for c in caps)
    needing = {tpl for tpl, needs in TEMPLATES if needs}
    assert not any(c == tpl.format(name="mystery", category="emoji", subcategory="", keywords="", style="an")
                   for c in caps for tpl in needing)  # fmt: skip
    toned = EmojiRecord(
        key="waving hand", name="waving hand", category="People & Body", skin_tone="dark skin tone"
    )
    assert all("waving hand: dark skin tone" in make_caption(toned, random.Random(s)) for s in range(20))


def test_split_is_a_stable_hash_of_the_name() -> None:
    keys = [f"emoji {i}" for i in range(4000)]
    val = [k for k in keys if held_out(k, 0.05)]
    assert 0.04 < len(val) / len(keys) < 0.06
    assert val == [k for k in keys if held_out(k, 0.05)]  # deterministic
    assert set(val) <= {k for k in keys if held_out(k, 0.10)}  # nested as the fraction grows


def test_codepoints_and_skin_tones() -> None:
    assert base_codepoints("1F44B-1F3FD") == "1f44b"
    assert base_codepoints("2764-FE0F") == "2764"
    assert base_codepoints("1f3fb") == "1f3fb"  # a lone swatch keeps its code point
    assert skin_tone_of("1f44b-1f3fd") == "medium skin tone"
    assert skin_tone_of("1f9d1-1f3fb-200d-1f91d-200d-1f9d1-1f3ff") == "light skin tone, dark skin tone"
    assert skin_tone_of("1f3fb") == "" and skin_tone_of("1f34e") == ""
    assert strip_tone_suffix("man-elf-tone3") == ("man-elf", "1f3fd")
    assert strip_tone_suffix("skier-medium-dark") == ("skier", "1f3fe")
    assert strip_tone_suffix("dark") == ("dark", "")


def test_composite_on_white() -> None:
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 0, 128]]], np.uint8)
    rgb = composite_on_white(rgba)
    assert rgb.tolist() == [[[255, 0, 0], [255, 255, 255], [127, 127, 127]]]
    with pytest.raises(ConfigError, match="RGBA"):
        composite_on_white(rgba[..., :3])


LEFT_HALF_RED = '<rect x="0" y="0" width="64" height="128" fill="#ff0000"/>'


def test_render_svg_and_png() -> None:
    svg = sources._svg({"width": 128, "height": 128}, LEFT_HALF_RED, {})
    img = render("svg", svg, 16)
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    assert (img[:, :7] == [255, 0, 0]).all() and (img[:, 9:] == 255).all()
    assert np.array_equal(render("svg", svg, 16, hflip=True), img[:, ::-1])
    assert render("svg", svg, 64).shape == (64, 64, 3)
    png = io.BytesIO()
    PIL_Image.new("RGBA", (8, 8), (0, 0, 255, 0)).save(png, "PNG")
    assert (render("png", png.getvalue(), 16) == 255).all()  # transparent -> white, resized to 16


def _tgz(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))


def _png(color: tuple[int, int, int, int]) -> bytes:
    buf = io.BytesIO()
    PIL_Image.new("RGBA", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


def _iconify(icons: dict[str, str], chars: dict[str, str], aliases: dict | None = None) -> dict[str, bytes]:
    body = {"prefix": "t", "icons": {k: {"body": v} for k, v in icons.items()}, "aliases": aliases or {},
            "width": 128, "height": 128}  # fmt: skip
    meta = {"categories": {"Food & Drink": [k for k in icons if "apple" in k]}}
    return {
        "package/icons.json": json.dumps(body).encode(),
        "package/chars.json": json.dumps(chars).encode(),
        "package/metadata.json": json.dumps(meta).encode(),
    }


@pytest.fixture()
def fake_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The four pinned tarballs in miniature, with PACKAGES pointing at their sha256."""
    dl = tmp_path / "downloads"
    dl.mkdir()
    emoji = [
        {"name": "RED APPLE", "unified": "1F34E", "image": "1f34e.png", "category": "Food & Drink",
         "subcategory": "food-fruit", "sort_order": 1, "has_img_google": True, "short_names": ["apple"]},
        {"name": "WAVING HAND SIGN", "unified": "1F44B", "image": "1f44b.png", "category": "People & Body",
         "subcategory": "hand-fingers-open", "sort_order": 2, "has_img_google": True, "short_names": ["wave"],
         "skin_variations": {"1F3FD": {"unified": "1F44B-1F3FD", "image": "1f44b-1f3fd.png",
                                       "has_img_google": True}}},
    ]  # fmt: skip
    files = {
        "emoji-datasource-google": {
            "package/emoji.json": json.dumps(emoji).encode(),
            "package/img/google/64/1f34e.png": _png((255, 0, 0, 255)),
            "package/img/google/64/1f44b.png": _png((255, 200, 0, 255)),
            "package/img/google/64/1f44b-1f3fd.png": _png((150, 100, 50, 255)),
        },
        "noto": _iconify(
            {
                "red-apple": LEFT_HALF_RED,
                "waving-hand": LEFT_HALF_RED,
                "waving-hand-medium-skin-tone": LEFT_HALF_RED,
            },
            {"1f34e": "red-apple", "1f44b": "waving-hand", "1f44b-1f3fd": "waving-hand-medium-skin-tone"},
        ),
        "fluent-emoji-flat": _iconify(
            {"red-apple": LEFT_HALF_RED, "hand-left": LEFT_HALF_RED},
            {"1f34e": "red-apple"},
            {"hand-right": {"parent": "hand-left", "hFlip": True}, "apple": {"parent": "red-apple"}},
        ),
        "emojilib": {
            "package/dist/emoji-en-US.json": json.dumps(
                {"🍎": ["red_apple", "fruit", "mac"], "👋": ["waving_hand", "hands", "gesture", "goodbye"]}
            ).encode()
        },
    }
    for name, content in files.items():
        pkg = sources.PACKAGES[name]
        _tgz(dl / pkg.tarball, content)
        digest = hashlib.sha256((dl / pkg.tarball).read_bytes()).hexdigest()
        monkeypatch.setitem(
            sources.PACKAGES, name, sources.Package(pkg.spec, pkg.tarball, digest, pkg.licence, pkg.url)
        )
    return dl


def test_build_end_to_end(fake_downloads: Path, tmp_path: Path) -> None:
    out = tmp_path / "images"
    manifest = build_image_set(out, fake_downloads, size=16, fraction=0.35, command="test")
    # 3 PNGs + 3 Noto SVGs + 2 Fluent icons + 1 mirrored alias (the plain alias repeats a picture: skipped)
    counts = {s: e["count"] for s, e in manifest["splits"].items()}
    assert sum(counts.values()) == 9
    rows = {s: read_captions(out, s).to_pylist() for s in counts}
    for split, n in counts.items():
        images = open_images(out, split, verify_sha256=True)
        assert images.shape == (n, 16, 16, 3) and len(rows[split]) == n
        assert all(held_out(r["key"], 0.35) == (split == "val") for r in rows[split])
    assert counts["train"] and counts["val"]
    keys = {s: {r["key"] for r in rows[s]} for s in rows}
    assert not keys["train"] & keys["val"]  # every source and tone of one emoji lands in one split
    everything = rows["train"] + rows["val"]
    by_icon = {(r["source"], r["icon"]): r for r in everything}
    apple = by_icon[("noto-png", "1f34e.png")]
    assert (
        apple["name"] == "red apple"
        and apple["category"] == "Food & Drink"
        and apple["keywords"] == ["fruit", "mac"]
    )
    assert apple["licence"] == "Apache-2.0" and by_icon[("fluent-flat-svg", "red-apple")]["licence"] == "MIT"
    toned = by_icon[("noto-svg", "waving-hand-medium-skin-tone")]
    assert toned["key"] == "waving hand" and toned["skin_tone"] == "medium skin tone"
    assert by_icon[("noto-png", "1f44b-1f3fd.png")]["skin_tone"] == "medium skin tone"
    assert ("fluent-flat-svg", "hand-right") in by_icon and ("fluent-flat-svg", "apple") not in by_icon
    assert all(r["caption"] for r in everything)

    again = build_image_set(tmp_path / "again", fake_downloads, size=16, fraction=0.35, command="test")
    assert (out / "manifest.json").read_bytes() == (tmp_path / "again" / "manifest.json").read_bytes()
    for split in counts:  # byte-identical rebuild
        for kind in ("images", "captions"):
            assert again["splits"][split][kind]["sha256"] == manifest["splits"][split][kind]["sha256"]

    packed = build_image_set(tmp_path / "z", fake_downloads, size=16, fraction=0.35, compress=True)
    for split in counts:
        assert packed["splits"][split]["images"]["file"].endswith(".npz")
        assert np.array_equal(open_images(tmp_path / "z", split), open_images(out, split))


def test_build_errors(fake_downloads: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="multiple of 8"):
        build_image_set(tmp_path / "x", fake_downloads, size=20)
    with pytest.raises(ConfigError, match="unknown source"):
        build_image_set(tmp_path / "x", fake_downloads, sources=("openmoji",))
    (fake_downloads / sources.PACKAGES["emojilib"].tarball).write_bytes(b"tampered")
    with pytest.raises(ArrowDiffError, match="sha256"):
        build_image_set(tmp_path / "x", fake_downloads)
    assert (
        main(["build", "--out", str(tmp_path / "x"), "--downloads", str(fake_downloads), "--size", "12"]) == 2
    )
    assert "multiple of 8" in capsys.readouterr().err
    with pytest.raises(WeightFormatError, match="build the image set first"):
        load_manifest(tmp_path / "nowhere")
