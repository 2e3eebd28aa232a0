#!/usr/bin/env bash
# No file over 1 MiB enters git (a wheel once did by accident, ac91951); uv.lock alone may be.
# Checks the files given (the pre-commit hook: those staged), or every tracked one (make lint).
#   large-files.sh [FILE...]        LARGE_FILE_LIMIT_KIB=1024 by default
set -euo pipefail

limit_kib=${LARGE_FILE_LIMIT_KIB:-1024}
allowed=(uv.lock)
if (($#)); then
  files=("$@")
else
  mapfile -t files < <(git ls-files)
fi

status=0
for file in "${files[@]}"; do
  [[ -f $file ]] || continue
  for name in "${allowed[@]}"; do
    [[ ${file#./} == "$name" ]] && continue 2
  done
  size=$(wc -c <"$file")
  if ((size > limit_kib * 1024)); then
    echo "large-files: $file is $((size / 1024)) KiB, over $limit_kib KiB (only ${allowed[*]} may be)" >&2
    status=1
  fi
done
exit "$status"
