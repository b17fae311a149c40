"""dfxlib: the library behind the dfx notebooks (DeepFeatureX Net / DeepFeatureX-SN replication).

Notebooks start with `run = dfxlib.start(profile, run_dir, data_root, overrides)`.
"""

from dfxlib.config import Config, ConfigError, resolve
from dfxlib.data.index import CLASS_INDEX, CLASSES, DataError, DatasetIndex, build_index
from dfxlib.run import MissingPrerequisite, Run, start

__version__ = "0.1.0"
__all__ = ["CLASSES", "CLASS_INDEX", "Config", "ConfigError", "DataError", "DatasetIndex", "MissingPrerequisite",
           "Run", "build_index", "resolve", "start", "__version__"]
