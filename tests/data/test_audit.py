
import numpy as np
import pandas as pd
from PIL import Image

from dfxlib.data.audit import attribute_rule_accuracy, audit, dataset_table
from dfxlib.data.index import build_index


def _save(path, fmt, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path, fmt)


def test_rule_accuracy():
    labels = pd.Series(["a"] * 10 + ["b"] * 10)
    assert attribute_rule_accuracy(labels, pd.Series(["x"] * 10 + ["y"] * 10)) == 1.0
    assert attribute_rule_accuracy(labels, pd.Series(["x"] * 20)) == 0.5


def test_format_confound_is_flagged(tmp_path):
    for i in range(10):
        _save(tmp_path / f"real/cam/{i}.jpg", "JPEG", i)
        _save(tmp_path / f"gan_generated/g/{i}.png", "PNG", 100 + i)
        _save(tmp_path / f"dm_generated/d/{i}.png", "PNG", 200 + i)
    result = audit(build_index(tmp_path, progress=False))
    c = result.confounds.set_index(["attribute", "task"])
    assert c.loc[("format", "real vs fake"), "confounded"]
    assert c.loc[("format", "real vs fake"), "rule_balanced_accuracy"] == 1.0
    assert not c.loc[("size", "real vs fake"), "confounded"]
    assert any("format is confounded" in w and "JPEG" in w for w in result.warnings)


def test_clean_data_has_no_confound(fixture_root):
    result = audit(build_index(fixture_root, progress=False))
    assert not result.confounds["confounded"].any()
    assert not [w for w in result.warnings if "confounded" in w]


def test_duplicates_within_and_across(tmp_path):
    _save(tmp_path / "real/a/1.png", "PNG", 1)
    _save(tmp_path / "real/a/2.png", "PNG", 1)
    _save(tmp_path / "gan_generated/g/3.png", "PNG", 2)
    _save(tmp_path / "dm_generated/d/4.png", "PNG", 2)
    dup = audit(build_index(tmp_path, progress=False)).duplicates.set_index("kind")
    assert dup.loc["within class", "families"] == "real"
    assert dup.loc["across classes", "families"] == "dm, gan"


def test_dataset_table_shows_paper_numbers_where_names_match():
    usable = pd.DataFrame({"family": ["gan", "gan", "real"], "generator": ["StyleGAN2", "mine", "FFHQ"],
                           "width": [256, 64, 1024], "height": [256, 64, 1024]})
    t = dataset_table(usable).set_index(["family", "generator"])
    assert t.loc[("gan", "StyleGAN2"), "paper_images"] == 7000
    assert t.loc[("gan", "mine"), "paper_images"] == ""
    assert t.loc[("gan", "(total)"), "images"] == 2 and t.loc[("gan", "(total)"), "paper_images"] == 37572
    assert t.loc[("real", "FFHQ"), "sizes"] == "1024x1024"
