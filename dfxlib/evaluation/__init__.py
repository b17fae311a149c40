"""What the notebooks report: metrics with bootstrap intervals, every model as a `Detector` scored on Tables 2-3
(`scoring`), generalization (Table 4) and the wild images, the paper's claims tested as verdicts, the paper's
own numbers, the ledger of differences from the paper, and the tables and figures they are written to.

Modules: `metrics`, `scoring`, `generalization`, `verdicts`, `paper`, `differences`, `tables`, `plots`.
"""
