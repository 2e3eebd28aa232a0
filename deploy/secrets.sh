#!/usr/bin/env bash
# make secrets [SECRETS_DIR=DIR]: a random value for each production secret DIR (default ./secrets)
# lacks; an existing file is never touched. The directory is 0700 and the files 0444: why, in
# deploy/remote-lib.sh. Each value is 64 hex digits (32 random bytes), no newline: safe in a URL
# (REDIS_URL) and the same to any reader of the file. A *_ssh_key is an ed25519 key pair instead.
set -euo pipefail
# shellcheck source=deploy/lib.sh
source "$(dirname "$0")/lib.sh"

dir=${1:-secrets}
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"
created=0
for name in "${SECRETS[@]}"; do
  [[ -e $dir/$name ]] && continue
  if [[ $name == *_ssh_key ]]; then
    # An SSH key pair: the private key is the secret; NAME.pub goes to the other machine.
    ssh-keygen -q -t ed25519 -N '' -C "fastapi-kit $name" -f "$dir/$name" </dev/null
    chmod 0444 "$dir/$name.pub"
  else
    # noclobber: written only if still absent when opened.
    (set -C && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/$name")
  fi
  chmod 0444 "$dir/$name"
  echo "created $dir/$name"
  created=$((created + 1))
done
((created)) || echo "$dir has all ${#SECRETS[@]} secrets: nothing created"
