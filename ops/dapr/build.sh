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
me=ops/dapr/build.sh
out=${DAPRD_BIN:-$HOME/go/bin/daprd}
version=$(awk '$1 == "github.com/dapr/dapr" {print $2}' "$here/daprd/go.mod")

# stablecomponents: dapr's own flavour with every stable component (redis pub/sub and state
# among them); without a tag daprd panics at start by design, and allcomponents does not
# compile on Go 1.26 (assembly in github.com/choleraehyq/pid).
tags=stablecomponents
# as dapr's Makefile does for a release: the version stamped in, symbols stripped
ldflags="-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=${version#v}
  -X github.com/dapr/dapr/pkg/buildinfo.gitversion=$version
  -X github.com/dapr/kit/logger.DaprVersion=${version#v}"
. "$here/../lib/gobuild.sh"  # the stamp, --check/--force and the build itself
gobuild_stamp "$here/daprd" "$tags $ldflags"
gobuild_gate "$@"
# DAPRD_BUILD_JOBS overrides the build's parallelism (ops/lib/gobuild.sh)
gobuild_run "$here/daprd" "${DAPRD_BUILD_JOBS:-}" github.com/dapr/dapr/cmd/daprd \
  -tags "$tags" -ldflags "$ldflags"
