#!/usr/bin/env bash
# envs/<group>.post-deploy.sh are links to this one script. Snakemake runs it inside the freshly
# created conda env (--sdm conda), from the working directory. It installs the positrongan
# package itself, editable, so the env runs this checkout's code. Not a `pip: [-e ..]` entry in
# the env file: Snakemake copies the env file to .snakemake/conda/<hash>.yaml before `conda env
# create`, and pip would resolve `..` from there. The conda packages above already bring every
# dependency, hence --no-deps (nothing from PyPI).
set -euo pipefail
src="${POSITRONGAN_SRC:-$PWD}"
if ! grep -qs '^name = "positrongan"' "$src/pyproject.toml"; then
    echo "post-deploy: no positrongan checkout at '$src' (run snakemake from the repository" \
        "root, or set POSITRONGAN_SRC=/path/to/positrongan)" >&2
    exit 1
fi
python -m pip install --no-deps --no-build-isolation --disable-pip-version-check -q -e "$src"
python -c 'import positrongan' && command -v positrongan >/dev/null
