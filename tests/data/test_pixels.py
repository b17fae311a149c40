"""The uint8 pixel store: the same numbers as decoding every time, written once, appended, and recovered."""

import numpy as np
import pytest
import torch
from PIL import Image

from dfxlib.data.batches import ImageStore
from dfxlib.data.pixels import PixelStore, loader
from dfxlib.models.backbones import preprocess


def _images(root):
    rng = np.random.default_rng(0)
    sizes = [(32, 32), (50, 30), (300, 200), (64, 64), (17, 90), (256, 256)]
    rels = []
    for i, (w, h) in enumerate(sizes * 2):
        rel = f"img{i:02d}.png"
        mode = "RGBA" if i == 3 else "RGB"
        Image.fromarray(rng.integers(0, 256, (h, w, 4 if mode == "RGBA" else 3), dtype=np.uint8), mode).save(root / rel)
        rels.append(rel)
    return rels


def test_store_batches_equal_decoding_every_time(tmp_path):
    (tmp_path / "data").mkdir()
    rels = _images(tmp_path / "data")
    images = ImageStore(tmp_path / "data", keep=False)
    store = PixelStore(tmp_path / "pixels", images, 64)
    for backbone in ("test_resnet", "test_vit"):  # the ViT's preprocessing centre-crops after the resize
        tf = preprocess(backbone, 64)
        for part in (rels[:1], rels[2:3], rels):  # one image (resized alone today) and mixed sizes
            assert torch.equal(store.batch(part, tf), images.batch(part, tf)), (backbone, part)
    assert store.uint8(rels).dtype == torch.uint8 and store.uint8(rels).shape == (12, 3, 64, 64)


def test_each_image_is_decoded_once_and_only_new_rows_are_written(tmp_path):
    (tmp_path / "data").mkdir()
    rels = _images(tmp_path / "data")
    images = ImageStore(tmp_path / "data", keep=False)
    store = PixelStore(tmp_path / "pixels", images, 32)
    assert store.ensure(rels[:5]) == 5 and images.decodes == 5
    first = store.data.read_bytes()
    assert len(first) == 5 * 3 * 32 * 32
    again = PixelStore(tmp_path / "pixels", images, 32)  # another process, later
    assert again.ensure(rels[:5]) == 0 and again.ensure(rels) == 7 and images.decodes == 12
    assert again.data.read_bytes()[:len(first)] == first  # appended, earlier rows untouched
    batches = [rels[0:4], rels[4:8], rels[8:12]]
    got = list(loader(again, batches))
    assert all(torch.equal(g, again.uint8(b)) for g, b in zip(got, batches)) and images.decodes == 12
    other = PixelStore(tmp_path / "pixels", images, 48)  # another input size: its own store
    assert other.data != again.data and other.ensure(rels[:1]) == 1


def test_a_cut_store_keeps_its_whole_rows_and_decodes_the_rest(tmp_path):
    (tmp_path / "data").mkdir()
    rels = _images(tmp_path / "data")
    images = ImageStore(tmp_path / "data", keep=False)
    store = PixelStore(tmp_path / "pixels", images, 32)
    want = store.uint8(rels).clone()
    row = 3 * 32 * 32
    with open(store.data, "r+b") as fh:  # a write stopped half-way through row 7
        fh.truncate(6 * row + row // 2)
    fresh = PixelStore(tmp_path / "pixels", images, 32)
    assert len(fresh.have) == 6 and fresh.data.stat().st_size == 6 * row
    assert torch.equal(fresh.uint8(rels), want)
    store.index_path.write_text("not json")  # a damaged index: everything decoded again, same pixels
    assert torch.equal(PixelStore(tmp_path / "pixels", images, 32).uint8(rels), want)


def test_a_dataset_whose_files_changed_gets_new_caches(tmp_path):
    """Stores and feature caches are keyed by the folder and its content (the index's hashes), so changed
    files are never served from an old store."""
    (tmp_path / "data").mkdir()
    rels = _images(tmp_path / "data")
    old = ImageStore(tmp_path / "data", keep=False, content="hash-before")
    before = PixelStore(tmp_path / "pixels", old, 32).uint8(rels[:1])
    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "data" / rels[0])
    new = ImageStore(tmp_path / "data", keep=False, content="hash-after")
    assert new.key != old.key
    after = PixelStore(tmp_path / "pixels", new, 32).uint8(rels[:1])
    assert not torch.equal(before, after) and after[0, 0].float().mean() == 255


@pytest.mark.parametrize("shape", [(1100, 700), (513, 1500), (1025, 40), (300, 300)])
def test_the_one_resize_reads_large_images_in_strips_with_the_whole_image_numbers(shape, monkeypatch):
    """`resize_uint8` (every model's resize of a decoded image) resizes across a strip of rows at a time, then
    down: bit for bit what one resize of the whole image gives, short last strip and upscaling included."""
    from torchvision.transforms.v2 import functional as TF

    from dfxlib.data import resize

    monkeypatch.setattr(resize, "RESIZE_ROWS", 128)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8))
    for size in (32, 256, 1200):
        assert torch.equal(resize.resize_uint8(img, size), TF.resize(TF.pil_to_tensor(img), [size, size],
                                                                      antialias=True)), (shape, size)


def test_a_first_epoch_starts_after_one_batch_and_a_bad_image_is_raised_to_the_caller(tmp_path):
    """#33: the loader decoded every missing image of the epoch before its first batch; now its thread decodes
    each batch as it comes up, the same rows, and an unreadable image raises in the caller instead of hanging."""
    from dfxlib.data.decode import ImageError

    (tmp_path / "data").mkdir()
    rels = _images(tmp_path / "data")
    images = ImageStore(tmp_path / "data", keep=False)
    store = PixelStore(tmp_path / "pixels", images, 32)
    batches = [rels[i:i + 2] for i in range(0, 12, 2)]
    got = loader(store, batches, prefetch=1)
    first = next(got)
    assert images.decodes <= 3 * 2 < len(rels)  # this batch and at most the two the thread works ahead on
    rest = list(got)
    assert images.decodes == len(rels)
    fresh = PixelStore(tmp_path / "again", ImageStore(tmp_path / "data", keep=False), 32)
    assert all(torch.equal(a, fresh.uint8(b)) for a, b in zip([first, *rest], batches))
    (tmp_path / "data" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    with pytest.raises(ImageError, match="broken.png"):
        list(loader(store, [rels[:2], ["broken.png"], rels[2:4]]))
