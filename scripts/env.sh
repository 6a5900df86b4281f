# Sourced by the scripts: where promptgrid keeps its Python environment, build and assets,
# outside the clone so that every clone, CI run and later session reuses them.
# Override the folder with PROMPTGRID_HOME.
PROMPTGRID_HOME="${PROMPTGRID_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/promptgrid}"
PROMPTGRID_VENV="$PROMPTGRID_HOME/venv"
export PROMPTGRID_HOME PROMPTGRID_VENV
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PROMPTGRID_HOME/target}"
# tch builds against the torch that pip installed (torch-sys asks this python where it is).
export LIBTORCH_USE_PYTORCH=1
export PYTHON_SYS_EXECUTABLE="$PROMPTGRID_VENV/bin/python"
export PATH="$PROMPTGRID_VENV/bin:$PATH"
