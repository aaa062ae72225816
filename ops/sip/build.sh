#!/usr/bin/env bash
# Builds LiveKit's SIP service (github.com/livekit/sip, cmd/livekit-sip) from the Go module
# proxy into $LIVEKIT_SIP_BIN (default ~/go/bin/livekit-sip), from the module in
# ops/sip/livekit-sip (go.mod + go.sum committed: the build is reproducible).
#
#   ops/sip/build.sh           build only when the binary is missing or its stamp differs
#   ops/sip/build.sh --check   exit 0 when the binary is there and current, 1 when not
#   ops/sip/build.sh --force   build again
#
# The stamp (~/go/bin/livekit-sip.stamp) is the sha1 of go.mod, go.sum and the build flags:
# bump the sip version in go.mod (and copy its go.mod's require blocks and go.sum) and the
# next ./dev test builds again. cgo: it links Debian's libopus, libopusfile and libsoxr
# (apt-get install libopus-dev libopusfile-dev libsoxr-dev pkg-config).
# Why a module of our own: `go install github.com/livekit/sip/cmd/livekit-sip@v1.8.0` stops at
# "loading deprecation ... @v/list: 403 Forbidden" (the proxy here serves the version, not the
# module's version list). Times and the rest: docs/voice.md, "Telephony".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
me=ops/sip/build.sh
out=${LIVEKIT_SIP_BIN:-$HOME/go/bin/livekit-sip}
ldflags="-s -w"  # symbols stripped, as for a release
. "$here/../lib/gobuild.sh"  # the stamp, --check/--force and the build itself
gobuild_stamp "$here/livekit-sip" "$ldflags"
gobuild_gate "$@"
for lib in opus opusfile soxr; do
  pkg-config --exists "$lib" 2>/dev/null || {
    echo "$me: $lib not found by pkg-config (apt-get install libopus-dev" \
      "libopusfile-dev libsoxr-dev pkg-config)" >&2; exit 1; }
done
# LIVEKIT_SIP_BUILD_JOBS overrides the build's parallelism (ops/lib/gobuild.sh)
gobuild_run "$here/livekit-sip" "${LIVEKIT_SIP_BUILD_JOBS:-}" \
  github.com/livekit/sip/cmd/livekit-sip -ldflags "$ldflags"
