"""lens_ros: language-instructed segmentation for robots (LENS on ROS 2).

The generated interfaces (``lens_ros.msg``, ``lens_ros.srv``) are installed by the
CMake build into the interpreter's site-packages while the hand-written modules may
live in a source tree; ``extend_path`` joins both into one package.
"""

import pkgutil
import sys
from pathlib import Path

__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"


def _prefer_project_training() -> None:
    """Make ``import training`` find this project's training/, not sam2's.

    The sam2 wheel installs an unrelated top-level package called ``training``. A source
    checkout is on sys.path after site-packages (editable install), so without this an
    entry point run from another directory would import sam2's package.
    """
    if "training" in sys.modules:
        return
    for part in __path__:  # the installed copy of this file and the source tree's
        root = Path(part).resolve().parent
        if (root / "package.xml").is_file() and (root / "training" / "__init__.py").is_file():
            if sys.path[:1] != [str(root)]:
                sys.path.insert(0, str(root))
            return


_prefer_project_training()
