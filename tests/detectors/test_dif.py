"""DIF: residuals, correlation, the contrastive loss, the U-Net, learning a planted fingerprint, training on the
shared splits, the union detector, the tables and the gray-image experiment."""

import numpy as np
import pytest
import torch
from PIL import Image

import dfxlib
from dfxlib import detectors as dt
from dfxlib.config import ConfigError, resolve
from dfxlib.detectors import dif, difnet
from dfxlib.evaluation.scoring import Detector


def test_centre_crop_keeps_native_pixels_and_zero_pads():
    a = np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    x = difnet.centre_crop(Image.fromarray(a), 64)
    assert x.shape == (3, 64, 64)
    assert torch.equal(x, torch.from_numpy(a[8:72, 18:82].astype(np.float32)).permute(2, 0, 1) / 255)  # no resampling
    small = difnet.centre_crop(Image.fromarray(a[:20, :20]), 32)
    assert torch.equal(small[:, 6:26, 6:26], torch.from_numpy(a[:20, :20].astype(np.float32)).permute(2, 0, 1) / 255)
    assert small[:, :6].abs().sum() == 0 and small[:, :, 26:].abs().sum() == 0


def test_wiener_residual_is_zero_on_flat_images_and_finds_planted_noise():
    flat = torch.full((1, 3, 32, 32), 0.4)
    assert difnet.wiener_residual(flat).abs().max() < 1e-6
    g = torch.Generator().manual_seed(0)
    smooth = torch.linspace(0.3, 0.5, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32)
    noise = 0.01 * torch.randn(1, 3, 32, 32, generator=g)
    r = difnet.wiener_residual(smooth + noise)
    inner = (..., slice(1, -1), slice(1, -1))
    assert float(difnet.correlation(r[inner], noise[inner])[0]) > 0.8  # the residual is the noise, not the ramp
    assert float(difnet.correlation(r[inner], smooth[inner])[0]) < 0.1
    shifted = difnet.wiener_residual(torch.roll(smooth + noise, 3, dims=-1))
    assert torch.allclose(shifted[..., 1:-1, 5:-1], torch.roll(r, 3, dims=-1)[..., 1:-1, 5:-1], atol=1e-6)


def test_correlation_is_pearson_and_the_loss_pairs_halves():
    a, b = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 8, 8)
    rho = difnet.correlation(a, b)
    ref = [np.corrcoef(a.flatten().numpy(), b[i].flatten().numpy())[0, 1] * (191 / 192) for i in range(4)]
    assert np.allclose(rho.numpy(), ref, atol=1e-5)
    fake = torch.tensor([0, 1, 0, 0])
    # pairs (0, 2): same class, distance 0 -> 0; (1, 3): differ by 0.015 >= margin -> 0
    assert float(difnet.contrastive_loss(torch.tensor([0.1, 0.1, 0.1, 0.115]), fake)) == pytest.approx(0.0)
    # (1, 3) differ by only 0.004: (0.01 - 0.004) / 0.01 / 2 pairs; (0, 2) same class 0.002 apart: 0.2 / 2
    loss = difnet.contrastive_loss(torch.tensor([0.1, 0.1, 0.102, 0.104]), fake)
    assert float(loss) == pytest.approx((0.6 + 0.2) / 2)
    odd = difnet.contrastive_loss(torch.tensor([0.1, 0.1, 0.102, 0.104, 0.5]), torch.tensor([0, 1, 0, 0, 1]))
    assert float(odd) == pytest.approx(float(loss))  # the odd last sample sits out (the reference crashed)


def test_centre_score_is_the_nearest_centre_rule():
    rho = np.array([0.0, 0.2, 0.1, 0.15, 0.05])
    s = difnet.centre_score(rho, 0.0, 0.2)
    assert np.allclose(s, [-1, 1, 0, 0.5, -0.5])
    flipped = difnet.centre_score(rho, 0.2, 0.0)  # fake centre below the real one: the sign follows
    assert np.allclose(flipped, -s)
    assert (difnet.centre_score(rho, 0.1, 0.1) == 0).all()
    nearer_fake = np.abs(rho - 0.2) < np.abs(rho - 0.0)
    assert ((s > 0) == nearer_fake).all()


def test_unet_shapes_and_the_ema_fingerprint():
    torch.manual_seed(0)
    net = difnet.DIFNet(32, seed=0)
    assert net.unet(net.noise).shape == (1, 3, 32, 32)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules()) == difnet.DEPTH
    assert torch.equal(net.noise, difnet.DIFNet(32, seed=0).noise)  # the fixed input is seeded
    a, b = torch.ones(1, 3, 32, 32), torch.zeros(1, 3, 32, 32)
    net.update(a)
    assert torch.equal(net.fingerprint, a)  # starts from the first output
    net.update(b)
    assert torch.allclose(net.fingerprint, torch.full_like(a, difnet.EMA))
    with pytest.raises(ValueError, match="multiple of 16"):
        difnet.DIFNet(40, seed=0)


def test_training_learns_a_planted_fingerprint():
    g = torch.Generator().manual_seed(1)
    pattern = torch.randn(1, 3, 4, 4, generator=g).repeat(1, 1, 8, 8)  # a periodic trace, as upsampling leaves

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        fake = torch.arange(n) % 2
        return torch.randn(n, 3, 32, 32, generator=g) + 0.5 * fake.view(-1, 1, 1, 1) * pattern, fake

    r_tr, y_tr = make(128)
    torch.manual_seed(0)
    net = difnet.DIFNet(32, seed=0).train()
    opt = torch.optim.AdamW(net.unet.parameters(), lr=difnet.LR, weight_decay=difnet.WEIGHT_DECAY)
    for _ in range(300):
        j = torch.randperm(128)[:32]
        loss, _, _ = difnet.step(net, (r_tr[j], y_tr[j]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        r_va, y_va = make(64)
        mu_real, mu_fake = difnet.centres(difnet.correlation(net.fingerprint, r_va), y_va)
        r_te, y_te = make(64)
        s = difnet.centre_score(difnet.correlation(net.fingerprint, r_te).numpy(), mu_real, mu_fake)
    assert abs(float(difnet.correlation(net.fingerprint, pattern)[0])) > 0.3  # the EMA fingerprint is the trace
    assert abs(mu_fake - mu_real) > difnet.margin_for(32)
    assert ((s > 0) == y_te.numpy().astype(bool)).mean() >= 0.85


def test_settings_are_checked():
    assert resolve("paper", {"data_root": "x"}).dif_crop == 256
    with pytest.raises(ConfigError, match="dif_crop"):
        resolve("smoke", {"dif_crop": 40})
    with pytest.raises(ConfigError, match="dif_budgets"):
        resolve("smoke", {"dif_budgets": [1]})
    assert resolve("smoke", {"dif_budgets": "4, 6"}).dif_budgets == (4, 6)


def test_train_score_reuse_and_tables(tmp_path, fixture_root):
    run = dfxlib.start("smoke", run_dir=str(tmp_path / "r"), data_root=str(fixture_root),
                       overrides={"progress": False, "dif_epochs": 7, "dif_budgets": [2]})
    index = run.index()
    split = run.split(index)
    store = run.images(index)
    fps = dif.train_fingerprints(run, store, split)
    assert [fp.generator for fp in fps] == dif.seen_generators(split) and len(fps) == 4
    assert all(fp.fit.history["epoch"].tolist() == [1, 2] and np.isfinite(fp.mu_real) for fp in fps)  # 5 + 2 passes
    assert all(int(fp.net.updates) == min(5 * fp.fit.best_epoch, 7) for fp in fps)  # one step per pass here
    rows = dt.comparison_rows(run, index, split)
    s = dif.score_matrix(run, store, fps, list(rows["path"]))
    assert s.shape == (len(rows), 4)
    assert np.array_equal(s, dif.score_matrix(run, store, fps, list(rows["path"])))  # deterministic
    u = dif.union(run, store, split, fps)
    _, held = dif.pools(split, run.config.val_fraction, run.config.seed)
    top = dif.score_matrix(run, store, fps, list(held["path"])).max(1)
    assert u.mu_fake == pytest.approx(top[held["target"].to_numpy() == 1].mean())  # centres from held-out images
    assert u.mu_real == pytest.approx(top[held["target"].to_numpy() == 0].mean())
    det = dif.as_detector(run, u)
    assert isinstance(det, Detector)
    probs = det.predict(store, list(rows["path"]), "raw", None)
    nearer_fake = np.abs(s.max(1) - u.mu_fake) < np.abs(s.max(1) - u.mu_real)
    assert np.allclose(probs.sum(1), 1) and ((probs.argmax(1) != 2) == nearer_fake).all()
    again = dif.train_fingerprints(run, store, split)  # finished: loaded, not retrained
    assert all(a.fit.resumed_from == 2 and torch.equal(a.net.fingerprint, b.net.fingerprint)
               for a, b in zip(again, fps))
    low = dif.train_fingerprints(run, store, split, 2)
    assert all(fp.n_train == 4 and fp.budget == "n2" for fp in low)
    assert not torch.equal(low[0].net.fingerprint, fps[0].net.fingerprint)
    own = dif.fingerprint_table(run, store, rows, {"all": fps, "n2": low})
    assert set(own["budget"]) == {"all", "n2"} and own["balanced_accuracy"].between(0, 100).all()
    assert (own.loc[own["budget"] == "n2", "train per class"] == 2).all()
    cross = dif.cross_table(run, store, rows, fps)
    fakes = rows[rows["family"] != "real"]
    assert list(cross["fingerprint"]) == [fp.generator for fp in fps]
    assert set(cross.columns) == {"fingerprint", "real", *fakes["generator"]}
    j = 0
    gen = fps[j].generator
    expect = 100 * (s[(rows["generator"] == gen).to_numpy(), j] > 0).mean()
    assert cross.loc[j, gen] == pytest.approx(expect, abs=0.01)


def test_fourier_picture_and_grid_ratio():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(64, 64, 3))
    assert 0.7 < difnet.grid_ratio(noise) < 1.3
    tiled = np.tile(rng.normal(size=(16, 16, 3)), (4, 4, 1)) + 0.1 * noise
    assert difnet.grid_ratio(tiled) > 5  # anything repeating every 16 pixels sits on the grid
    checker = noise * 0.1 + ((np.arange(64)[:, None] + np.arange(64)[None, :]) % 2)[..., None]
    assert difnet.grid_ratio(checker) > 2  # a period-2 pattern: one grid frequency
    pic = difnet.fourier_picture(checker)
    assert pic.shape == (64, 64) and pic.min() >= 0 and pic.max() == pytest.approx(1.0)
    assert pic[0, 0] == pytest.approx(1.0)  # the checkerboard's frequency (32, 32) lands in the corner after the shift


def test_gray_experiment_is_seeded_and_fits():
    a = difnet.gray_experiment(32, 15, seed=0)
    b = difnet.gray_experiment(32, 15, seed=0)
    assert np.array_equal(a.image, b.image) and a.losses == b.losses
    assert a.image.shape == (32, 32, 3) and a.fourier.shape == (32, 32)
    assert a.losses[-1] < a.losses[0]
    assert np.isfinite(a.grid_ratio)


def test_stretch_shows_a_faint_pattern_despite_an_outlier():
    a = np.full((40, 40), 0.50)
    a[::2] = 0.51
    a[0, 0] = 10.0  # one outlying pixel
    s = difnet.stretch(a)
    assert s[1, 0] == pytest.approx(0.0) and s[2, 0] == pytest.approx(1.0) and s.max() <= 1.0
    assert (difnet.stretch(np.ones((4, 4))) == 0).all()
