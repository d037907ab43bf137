#!/usr/bin/env bash
# The wheels the lent GPU machine lacks for langplay (it has torch, transformers, peft, accelerate, datasets'
# neighbours but not these; no network there), downloaded here into .whl/ (git-ignored through .git/info/exclude)
# for Python 3.12 on x86-64. Then, on the device:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:src && python3 benchmarks/gpu_check.py --json $OUT/gpu_check.json
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PACKAGES=(pydantic pydantic-core annotated-types typing-inspection datasets dill multiprocess pyarrow-hotfix
          math-verify latex2sympy2-extended antlr4-python3-runtime nltk trl)
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "${PACKAGES[@]}" 2>&1 | grep -v "^WARNING: Location" || true
ls -la .whl
