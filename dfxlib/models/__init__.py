"""Stages 1-3, the models: backbones by the paper's names, the networks (base classifier, Siamese net, fusion
head), the one fit loop, the base models, their frozen features, the fusion head with the complete model, and
the two baselines it is measured against (the plain classifier and the linear probe).

Modules: `backbones`, `networks`, `train` (with `distributed` for several processes), `basemodels` (stage 1),
`features` (stage 2), `fusion` (stage 3), `baselines`.
"""
