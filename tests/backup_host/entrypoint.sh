#!/bin/sh
# Host keys of its own, the kit's public key allowed for user backup-copy, then sshd in front.
set -eu
ssh-keygen -A >/dev/null
printf '%s\n' "${AUTHORIZED_KEY:?the kit SSH public key}" >/home/backup-copy/.ssh/authorized_keys
chown backup-copy:backup-copy /home/backup-copy/.ssh/authorized_keys
chmod 0600 /home/backup-copy/.ssh/authorized_keys
exec /usr/sbin/sshd -D -e
