import numpy as np
import pytest

from dfxlib.audit import audit
from dfxlib.images import ImageError, load_rgb
from dfxlib.index import build_index


@pytest.mark.parametrize("check", ["full", "header"])
def test_every_bad_file_is_listed_with_a_reason(bad_root, check):
    root, kinds = bad_root
    idx = build_index(root, check=check, max_pixels=10_000_000, progress=False)
    t = idx.table.set_index("path")
    assert set(t.index) == set(kinds)  # indexing went on past every bad file
    expect_error = {"zero-byte": "empty file", "non-image": "not an image", "bomb": "decompression bomb",
                    "unexpected": "unexpected location", "truncated": "truncated"}
    for rel, kind in kinds.items():
        err = t.loc[rel, "error"]
        if kind in expect_error:
            assert expect_error[kind] in err, (rel, err)
        else:
            assert err == "", (rel, err)
    notes = {"cmyk": "CMYK", "16-bit": "16-bit", "palette": "palette", "rgba": "alpha", "grayscale": "grayscale",
             "animated": "animated"}
    for rel, kind in kinds.items():
        if kind in notes:
            assert notes[kind] in t.loc[rel, "note"], (rel, t.loc[rel, "note"])


def test_audit_lists_bad_and_converted_files(bad_root):
    root, kinds = bad_root
    result = audit(build_index(root, max_pixels=10_000_000, progress=False))
    assert set(result.unusable["path"]) == {r for r, k in kinds.items()
                                            if k in ("zero-byte", "non-image", "bomb", "unexpected", "truncated")}
    assert {"real/src/cmyk.jpg", "real/src/gray16.png", "gan_generated/g1/animated.gif"} <= set(
        result.converted["path"])
    assert any("cannot be used" in w and "zero.png" in w for w in result.warnings)


def test_load_rgb_converts_every_readable_mode(bad_root):
    root, kinds = bad_root
    for rel, kind in kinds.items():
        if kind in ("cmyk", "16-bit", "palette", "rgba", "grayscale", "animated", "ok"):
            img = load_rgb(root / rel)
            assert img.mode == "RGB" and img.size == (24, 24), rel
    g16 = np.asarray(load_rgb(root / "real/src/gray16.png"))[..., 0]
    assert g16.max() > 200 and g16.min() == 0  # 16-bit values scaled, not clipped to white


@pytest.mark.parametrize("rel, reason", [("real/src/zero.png", "empty file"), ("real/src/text.png", "not an image"),
                                         ("real/src/truncated.png", "truncated"),
                                         ("gan_generated/g1/bomb.png", "decompression bomb")])
def test_load_rgb_errors_name_the_file(bad_root, rel, reason):
    root, _ = bad_root
    with pytest.raises(ImageError) as exc:
        load_rgb(root / rel, max_pixels=10_000_000)
    assert str(root / rel) in str(exc.value) and reason in str(exc.value)
