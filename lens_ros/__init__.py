"""lens_ros: language-instructed segmentation for robots (LENS on ROS 2).

The generated interfaces (``lens_ros.msg``, ``lens_ros.srv``) are installed by the
CMake build into the interpreter's site-packages while the hand-written modules may
live in a source tree; ``extend_path`` joins both into one package.
"""

import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
