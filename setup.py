"""What pyproject.toml cannot say: editable installs get the man pages too.

setuptools builds an editable wheel with the data files only when the distribution has a
``has_data`` method, which its own does not have (setuptools issue 3399), so ``pip install
-e .`` would leave ``man tstream`` without a page.
"""

from setuptools import setup
from setuptools.dist import Distribution


class _Distribution(Distribution):
    def has_data(self) -> bool:
        return self.has_data_files()


setup(distclass=_Distribution)
