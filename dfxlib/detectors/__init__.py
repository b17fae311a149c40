"""The detectors DeepFeatureX is compared with (notebook 06), trained and evaluated on the same splits, one convention:
binary, one logit, fake = 1 (the positive class for recall, AUC and AP).

- ``simplecnn`` (the comparative study's baseline, defined here as it publishes no code): four blocks of
  Conv 3x3 (padding 1) + ReLU + MaxPool 2 with 32, 64, 128, 256 channels, flatten, FC 512 + ReLU + Dropout
  0.5, FC 1; PyTorch's default initialisation, seeded; trained from scratch.
- ``wang2020`` (CNNDetection, Blur+JPEG(0.5)): the detector backbone (ResNet50 in the paper profile) with
  `fc = Linear(D, 1)` initialised N(0, 0.02); training augmentation in the published order: resize, Gaussian
  blur with probability 0.5 and sigma ~ U[0, 3], JPEG with probability 0.5 and quality ~ U{30..100} (PIL only:
  the published cv2 branch is left out), random crop to 224/256 of the side, horizontal flip; evaluation:
  the centre crop. With the published recipe the resize keeps the aspect (shorter side to the input size) and
  evaluation crops the image as it is, without resizing (CNNDetection's test).
- ``ganfingerprint``: a ResNet (`fingerprint_backbone`; ResNet34 in the paper profile) in three streams, a
  log-spectrum branch, self-attention, the fingerprint block and the residual classifier (see the class);
  only the new layers are initialised. Training augmentation: a horizontal flip on the shared recipe; with the
  published one, the reference's stack of resized crop, flip, rotation, colour jitter, JPEG, noise, blur and
  erasing (`transforms.fingerprint_train`).
- ``ssp`` (Single Simple Patch): the simplest of 64 candidate 32x32 patches (sum of absolute differences in
  four directions, lowest wins) taken at native resolution, upsampled bilinearly to the input size, three
  fixed SRM filters (5x5, summed over RGB) truncated to [-3, 3], the backbone, one logit. Training draws 64
  random candidates (seeded per image and epoch); evaluation uses a fixed 8 x 8 grid of candidates, so a
  prediction is deterministic.

Every detector trains on the base and fusion splits (the images DeepFeatureX saw) with a seeded validation
part and BCE with the real:fake ratio as positive weight (balanced). Its recipe (optimizer, learning rate and
schedule, batch, epochs, which weights are kept) is `registry.recipe_of`: on the paper profile each detector's
published one (`registry.RECIPES`), on the built-in profiles one shared short recipe.

Modules: `nets` (the networks), `transforms` (their image transforms), `registry` (`DETECTORS`, checkpoints),
`training` (training and predictions), `compare` (notebook 06's comparison), and DIF apart (`difnet`, `dif`: a
fingerprint per generator, not a one-logit network). The one-logit detectors' public names are imported here.
"""

from dfxlib.detectors.compare import compare, comparison_rows, comparison_table, confusions, gradcam_grid, pca_panels
from dfxlib.detectors.nets import SRM_FILTERS, BackboneLogit, GANFingerprint, SimpleCNN, SSPNet
from dfxlib.detectors.registry import DETECTORS, DetectorSpec, detector_meta, new_detector, spec_of
from dfxlib.detectors.training import TrainedDetector, as_detector, outputs, train_detector, training_rows
from dfxlib.detectors.transforms import simplest_patch, simplicity, wang_augment

__all__ = ["DETECTORS", "SRM_FILTERS", "BackboneLogit", "DetectorSpec", "GANFingerprint", "SSPNet", "SimpleCNN",
           "TrainedDetector", "as_detector", "compare", "comparison_rows", "comparison_table", "confusions",
           "detector_meta", "gradcam_grid", "new_detector", "outputs",
           "pca_panels", "simplest_patch", "simplicity", "spec_of", "train_detector", "training_rows",
           "wang_augment"]
