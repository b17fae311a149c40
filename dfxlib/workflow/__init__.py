"""The machinery that runs the method, apart from it (nothing outside this package imports it): the `dfx`
command, headless notebook execution, the units of work and their submission to this machine or Slurm, the
plan of a run with its measured throughput, and JupyterLab.

Modules: `cli`, `notebooks` (`dfx run`), `execute` (papermill that cannot hang), `units`, `submit`, `plan`,
`throughput` (the paper path timed on the machine at hand), `lab`.
"""
