"""Ships the numbered notebooks inside the package (dfxlib/notebooks/), so an installed `dfx run` works from
any folder; everything else about the package is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithNotebooks(build_py):
    """build_py that also copies notebooks/NN_*.ipynb into the built package."""

    def run(self) -> None:
        super().run()
        dest = Path(self.build_lib) / "dfxlib" / "notebooks"
        dest.mkdir(parents=True, exist_ok=True)
        for nb in sorted(Path(__file__).parent.joinpath("notebooks").glob("[0-9][0-9]_*.ipynb")):
            shutil.copy2(nb, dest / nb.name)


setup(cmdclass={"build_py": BuildPyWithNotebooks})
