#!/usr/bin/env bash
# Build lens_ros's msg/srv interfaces (and install launch/, config/, scripts) into a
# Python venv that holds ROS 2 from PyPI wheels. A colcon workspace does not need this.
set -euo pipefail
venv=$(cd "${1:-.venv}" && pwd)
py="$venv/bin/python"
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

# Some exported CMake files in the wheels name include paths of the machine that built
# them (/opt/python/cp3X-.../include/python3.X and a numpy _core/include). Point them
# at this interpreter's (idempotent).
py_inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$py" -c 'import numpy; print(numpy.get_include())')
{ grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$venv" --include='*.cmake' 2>/dev/null || true; } | while read -r f; do
  sed -i -E "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_inc}#g; s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${np_inc}#g" "$f"
done

export AMENT_PREFIX_PATH="$venv"
export PATH="$venv/bin:$PATH"
mkdir -p build
rm -rf build/interfaces
cmake -S . -B build/interfaces -G Ninja \
  -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
  -DPython3_EXECUTABLE="$py" -DBUILD_TESTING=OFF \
  -DLENS_ROS_INSTALL_PYTHON_SOURCES=OFF >build/interfaces.log 2>&1 \
  || { cat build/interfaces.log; exit 1; }
cmake --build build/interfaces -j2 >>build/interfaces.log 2>&1 || { tail -50 build/interfaces.log; exit 1; }
cmake --install build/interfaces >>build/interfaces.log 2>&1 || { tail -50 build/interfaces.log; exit 1; }
"$py" -c 'from lens_ros.msg import Segmentation, SegmentedObject; from lens_ros.srv import Segment' \
  || { echo "interfaces built but lens_ros.msg does not import" >&2; exit 1; }
echo "lens_ros interfaces installed into $venv"
