"""The networks: the contrastive loss on unit-norm embeddings, the fusion head's shape and input standardisation,
frozen base models under the head's training."""

import pytest
import torch

from dfxlib.models import basemodels, networks
from dfxlib.models.backbones import create_backbone


def test_contrastive_loss_margin_2():
    d = torch.tensor([0.0, 1.0, 3.0, 1.0])
    y = torch.tensor([0, 0, 1, 1])  # 1 = dissimilar
    expect = (0 + 0.5 * 1 + 0 + 0.5 * 1) / 4
    assert float(networks.contrastive_loss(d, y, 2.0)) == pytest.approx(expect)


@pytest.mark.parametrize("D, after_conv2", [(512, 126), (1024, 254), (2048, 510), (64, 14)])
def test_fusion_head_shape_and_layers(D, after_conv2):
    head = networks.FusionHead()
    assert head(torch.rand(4, 3, D)).shape == (4, 3)
    assert head.convs[:7](torch.rand(1, 3, D)).shape[-1] == after_conv2
    kinds = [type(m).__name__ for m in head.convs]
    assert kinds == ["Conv1d", "ReLU", "BatchNorm1d"] * 4 + ["Conv1d", "ReLU"]
    convs = [m for m in head.convs if isinstance(m, torch.nn.Conv1d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == [
        (16, 7, 2, 1), (64, 5, 2, 1), (256, 3, 1, 1), (512, 3, 1, 1), (1024, 3, 1, 1)]
    assert head.classifier.in_features == 1024 and head.classifier.out_features == 3


def _bn_buffers(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k}


def test_frozen_bases_keep_batch_norm_statistics_while_the_head_trains():
    torch.manual_seed(0)
    bases = [create_backbone("test_efficientnet", "none") for _ in range(3)]
    model = networks.CompleteModel(bases, networks.FusionHead())
    before = _bn_buffers(model.bases)
    assert before, "the test needs batch-norm layers in the bases"
    opt = torch.optim.Adam(model.head.parameters(), lr=1e-3)
    model.train()
    assert model.head.training and not any(m.training for m in model.bases.modules())
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.rand(8, 3, 32, 32) * 3), torch.randint(0, 3, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _bn_buffers(model.bases)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.bases.parameters())
    # control: the same steps with the bases in training mode (the reference's bug) do move them
    model.bases.train()
    for b in model.bases:
        b(torch.rand(8, 3, 32, 32) * 3)
    moved = _bn_buffers(model.bases)
    assert any(not torch.equal(before[k], moved[k]) for k in before)


def test_siamese_embeddings_are_unit_norm_so_scale_cannot_collapse_the_loss():
    f = torch.randn(6, 32)
    e = networks.embedding(f)
    assert torch.allclose(e.norm(dim=1), torch.ones(6))
    assert torch.allclose(networks.embedding(1e-3 * f), e, atol=1e-6)  # shrinking every feature changes nothing
    d = torch.nn.functional.pairwise_distance(e[:3], e[3:])
    y = torch.tensor([0, 1, 1])
    step = basemodels.siamese_step(1.0)
    net = networks.SiameseNet(torch.nn.Identity())
    loss, _, n = step(net, (f[:3], f[3:], y))
    assert n == 3 and torch.isclose(loss, networks.contrastive_loss(d, y, 1.0))


def test_the_fusion_head_standardises_its_inputs_whatever_their_scale():
    torch.manual_seed(0)
    x = torch.randn(64, 3, 40) * torch.tensor([1.0, 1e-3, 30.0])[None, :, None] + 5.0
    heads = []
    for scale in (1.0, 1000.0):
        torch.manual_seed(1)
        head = networks.FusionHead(in_channels=3, feature_dim=40).eval()
        head.set_input_stats(x * scale)
        heads.append(head(x * scale))
    assert torch.allclose(heads[0], heads[1], atol=1e-4)  # same logits for features 1000x larger
    assert {"in_mean", "in_std"} <= set(networks.FusionHead(3, feature_dim=40).state_dict())
    const = torch.ones(8, 3, 40)
    head = networks.FusionHead(3, feature_dim=40)
    head.set_input_stats(const)  # a constant feature keeps std 1: no division by zero
    assert torch.isfinite(head.eval()(const)).all()


def test_one_factory_builds_the_network_of_every_model_kind():
    from dfxlib.config import MODEL_KINDS
    from dfxlib.models.networks import network

    x = torch.randn(2, 3, 32, 32)
    widths = {kind: network(kind, create_backbone("test_resnet", "none")).eval()(x).shape[1] for kind in MODEL_KINDS}
    dim = create_backbone("test_resnet", "none")(x).shape[1]
    assert widths == {"unbalanced": 2, "siamese": dim, "plain": 3, "linear probe": dim}
    with pytest.raises(ValueError, match="unknown model kind 'gan'"):
        network("gan", create_backbone("test_resnet", "none"))
