#!/usr/bin/env bash
# Builds the real daprd from the Go module proxy into $DAPRD_BIN (default ~/go/bin/daprd),
# from the module in ops/dapr/daprd (go.mod + go.sum committed: the build is reproducible).
#
#   ops/dapr/build.sh           build only when the binary is missing or its stamp differs
#   ops/dapr/build.sh --check   exit 0 when the binary is there and current, 1 when not
#   ops/dapr/build.sh --force   build again
#
# The stamp (~/go/bin/daprd.stamp) is the sha1 of go.mod, go.sum and the build flags below:
# bump the dapr version in go.mod (and its replace lines) and the next ./dev test builds again.
# Why a module of our own: `go install github.com/dapr/dapr/cmd/daprd@v...` is refused
# because dapr's go.mod has replace directives. Times and the rest: docs/dapr.md.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${DAPRD_BIN:-$HOME/go/bin/daprd}
stamp_file=$out.stamp
version=$(awk '$1 == "github.com/dapr/dapr" {print $2}' "$here/daprd/go.mod")

# stablecomponents: dapr's own flavour with every stable component (redis pub/sub and state
# among them); without a tag daprd panics at start by design, and allcomponents does not
# compile on Go 1.26 (assembly in github.com/choleraehyq/pid).
tags=stablecomponents
# as dapr's Makefile does for a release: the version stamped in, symbols stripped
ldflags="-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${version#v}
  -X github.com/dapr/dapr/pkg/buildinfo.gitversion=$version
  -X github.com/dapr/kit/logger.DaprVersion=${version#v}"
stamp=$( (cat "$here/daprd/go.mod" "$here/daprd/go.sum"; echo "$tags $ldflags") \
  | sha1sum | cut -c1-12)

current() { [ -x "$out" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; }
case "${1:-}" in
  --check) current; exit ;;
  --force) ;;
  *) if current; then exit 0; fi ;;
esac
command -v go >/dev/null 2>&1 || { echo "ops/dapr/build.sh: go not found" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
cd "$here/daprd"
# nice and -p 1: on a developer's machine the build shares two cores with other work; in CI
# (CI set) nothing else runs while ./dev test builds, so it takes every core.
# DAPRD_BUILD_JOBS overrides both. -mod=readonly: go.sum decides, nothing is resolved anew.
jobs=${DAPRD_BUILD_JOBS:-$([ -n "${CI:-}" ] && nproc || echo 1)}
GOFLAGS="-mod=readonly -buildvcs=false" nice -n 19 go build -p "$jobs" -trimpath \
  -tags "$tags" -ldflags "$ldflags" -o "$out.tmp" github.com/dapr/dapr/cmd/daprd
mv -f "$out.tmp" "$out"
echo "$stamp" >"$stamp_file"
