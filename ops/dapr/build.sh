#!/usr/bin/env bash
# Builds the real daprd from the Go module proxy into $DAPRD_BIN (default ~/go/bin/daprd),
# from the module in ops/dapr/daprd (go.mod + go.sum committed: the build is reproducible).
#
#   ops/dapr/build.sh           build only when the binary is missing or its stamp differs
#   ops/dapr/build.sh --force   build again
#   ops/dapr/build.sh --check   exit 0 when the binary is there and current, 1 when not
#
# The stamp (~/go/bin/daprd.stamp) is the sha1 of go.mod, go.sum and this script: bump the
# dapr version in go.mod (and its replace lines) and the next ./dev test builds again.
# Cold: ~10 min on the 2-core CI machine (module downloads + compile); cached: < 1 s.
# Why a module of our own: `go install github.com/dapr/dapr/cmd/daprd@v...` is refused
# because dapr's go.mod has replace directives. docs/dapr.md, "How daprd is built here".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${DAPRD_BIN:-$HOME/go/bin/daprd}
stamp_file=$out.stamp
stamp=$(cat "$here/daprd/go.mod" "$here/daprd/go.sum" "$here/build.sh" | sha1sum | cut -c1-12)

current() { [ -x "$out" ] && [ "$(cat "$stamp_file" 2>/dev/null)" = "$stamp" ]; }
case "${1:-}" in
  --check) current; exit ;;
  --force) ;;
  *) if current; then exit 0; fi ;;
esac
command -v go >/dev/null 2>&1 || { echo "ops/dapr/build.sh: go not found" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
cd "$here/daprd"
# stablecomponents: dapr's own flavour with every stable component (redis pub/sub and state
# among them); without a tag daprd panics at start by design, and allcomponents does not
# compile on Go 1.26 (assembly in github.com/choleraehyq/pid). -mod=readonly: go.sum decides.
# nice and -p 1: the build shares two cores with the tests and other work.
version=$(awk '$1 == "github.com/dapr/dapr" {print $2}' go.mod)
GOFLAGS="-mod=readonly -buildvcs=false" nice -n 19 go build -p 1 -trimpath \
  -tags stablecomponents \
  -ldflags "-X github.com/dapr/dapr/pkg/buildinfo.version=${version#v}" \
  -o "$out.tmp" github.com/dapr/dapr/cmd/daprd
mv -f "$out.tmp" "$out"
echo "$stamp" >"$stamp_file"
