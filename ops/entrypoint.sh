#!/bin/sh
# The image's entrypoint (ops/Dockerfile, under tini): set the open-file limit, then exec the
# command, so that it runs as tini's child with the signals (SIGTERM: drain) it is sent.
#
# AGENTIA_NOFILE: the soft open-file limit to set. An edge process serves at most that many
# connections minus 1,000 (agentia/settings.py), so the chart sets it (edge.nofile). Raising
# the hard limit needs CAP_SYS_RESOURCE, which the chart drops: the container runtime's hard
# limit (containerd/CRI-O LimitNOFILE, docker --ulimit nofile) must already allow it.
set -eu
if [ -n "${AGENTIA_NOFILE:-}" ]; then
  hard=$(ulimit -Hn)
  if [ "$hard" != unlimited ] && [ "$hard" -lt "$AGENTIA_NOFILE" ]; then
    echo "agentia-entrypoint: AGENTIA_NOFILE=$AGENTIA_NOFILE is above the hard open-file" \
      "limit $hard; raise the container runtime's nofile limit (docs/deploy.md)" >&2
    exit 78
  fi
  ulimit -Sn "$AGENTIA_NOFILE"
fi
exec "$@"
