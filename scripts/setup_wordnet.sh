#!/usr/bin/env bash
# Offline WordNet 3.0 for nltk (METEOR in textgym.rewards): Debian's wordnet packages, copied into
# an nltk data folder with the generated lexnames file. Idempotent; CI runs it before the tests.
#   usage: bash scripts/setup_wordnet.sh [--target NLTK_DATA_DIR]   (PYTHON=/path/to/python)
# Default target: $NLTK_DATA (first entry), else ~/nltk_data. See docs/rewards.md.
set -euo pipefail
PY="${PYTHON:-python}"
if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/wordnet/index.sense ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        wordnet-base wordnet-sense-index
fi
"$PY" -m textgym.rewards.wordnet "$@"
