"""Stage 0, the images: the dataset index and its audit, the split, safe decoding, the uint8 pixel store and
seeded batches, the manipulations of the robustness tests, and MiniDFX (the built-in world, its generators and
its sanity baselines).

Modules: `index` (every image with its family, generator and problems), `audit` (notebook 01's tables), `split`
(base / fusion / test), `decode` (reading a file safely), `pixels` (decoded once into a uint8 store), `batches`
(preprocessed tensors per backbone), `perturb` (JPEG, blur, noise, ...), `minidfx`, `generators`, `spectra`.
"""
