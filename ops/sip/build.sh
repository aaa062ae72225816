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
out=${LIVEKIT_SIP_BIN:-$HOME/go/bin/livekit-sip}
stamp_file=$out.stamp
ldflags="-s -w"  # symbols stripped, as for a release
stamp=$( (cat "$here/livekit-sip/go.mod" "$here/livekit-sip/go.sum"; echo "$ldflags") \
  | sha1sum | cut -c1-12)

current() { [ -x "$out" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; }
case "${1:-}" in
  --check) current; exit ;;
  --force) ;;
  *) if current; then exit 0; fi ;;
esac
command -v go >/dev/null 2>&1 || { echo "ops/sip/build.sh: go not found" >&2; exit 1; }
for lib in opus opusfile soxr; do
  pkg-config --exists "$lib" 2>/dev/null || {
    echo "ops/sip/build.sh: $lib not found by pkg-config (apt-get install libopus-dev" \
      "libopusfile-dev libsoxr-dev pkg-config)" >&2; exit 1; }
done
mkdir -p "$(dirname "$out")"
cd "$here/livekit-sip"
# nice and -p 1: on a developer's machine the build shares two cores with other work; in CI
# (CI set) nothing else runs while ./dev test builds, so it takes every core.
# LIVEKIT_SIP_BUILD_JOBS overrides both. -mod=readonly: go.sum decides, nothing is resolved anew.
jobs=${LIVEKIT_SIP_BUILD_JOBS:-$([ -n "${CI:-}" ] && nproc || echo 1)}
GOFLAGS="-mod=readonly -buildvcs=false" nice -n 19 go build -p "$jobs" -trimpath \
  -ldflags "$ldflags" -o "$out.tmp" github.com/livekit/sip/cmd/livekit-sip
mv -f "$out.tmp" "$out"
echo "$stamp" >"$stamp_file"
