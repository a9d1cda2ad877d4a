#!/usr/bin/env bash
# mypy over textgym, textgym.rewards and textgym.agents.
# mypy cannot follow setuptools' package-dir mapping (textgym.rewards -> rewards/), so it checks a
# mirror of the installed layout made of symlinks; error paths point back into the repo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mirror=$(mktemp -d)
trap 'rm -rf "$mirror"' EXIT
mkdir "$mirror/textgym"
for f in "$root"/textgym/*; do ln -s "$f" "$mirror/textgym/"; done
ln -s "$root/rewards" "$mirror/textgym/rewards"
ln -s "$root/agents" "$mirror/textgym/agents"
cd "$mirror"
python -m mypy --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" -p textgym "$@"
