#!/usr/bin/env bash
# clang-format (the repo's .clang-format, Google style at 100 columns) on the C++ and CUDA files
# changed since the commit in .ci/format-base (where the check began; files nobody touched since
# keep their old layout): lists each file that is not formatted and exits 1. `make test` runs it.
# Fix a file with: clang-format -i FILE
set -euo pipefail
cd "$(dirname "$0")/.."
base=$(cat .ci/format-base)
if ! git cat-file -e "$base^{commit}" 2>/dev/null; then
  echo "check-format: $base (.ci/format-base) is not in this clone's history; checking the last commit's files"
  base=HEAD~1
  git cat-file -e "$base^{commit}" 2>/dev/null || { echo "check-format: no history to compare with; skipped"; exit 0; }
fi
mapfile -t files < <(git diff --name-only --diff-filter=d "$base" -- '*.cc' '*.h' '*.cu' '*.cuh')
bad=()
for f in "${files[@]}"; do
  [[ -f $f ]] || continue
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if ((${#bad[@]})); then
  echo "check-format: not clang-format clean (clang-format -i FILE fixes each):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "check-format: ${#files[@]} changed C++/CUDA files are clang-format clean"
