# Sourced by ops/sip/build.sh and ops/dapr/build.sh: a Go binary built from a module of our own
# (go.mod + go.sum committed) into $out, rebuilt only when its stamp changes.
#
#   gobuild_stamp DIR EXTRA   sets $stamp: the sha1 of DIR/go.mod, DIR/go.sum and EXTRA (the
#                             build flags), so bumping a version or a flag builds again
#   gobuild_gate "$@"         --check: exit 0 when $out is there with $stamp, 1 when not;
#                             --force: go on; nothing: exit 0 when current, else go on
#   gobuild_run DIR JOBS PKG ARGS...
#                             go build PKG (ARGS: -tags, -ldflags ...) in DIR into $out,
#                             then write the stamp ($out.stamp)
# The caller sets $out and names itself in $me (for messages).

gobuild_stamp() {
  stamp=$( (cat "$1/go.mod" "$1/go.sum"; echo "$2") | sha1sum | cut -c1-12)
}

gobuild_current() { [ -x "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$stamp" ]; }

gobuild_gate() {
  case "${1:-}" in
    --check) gobuild_current; exit ;;
    --force) ;;
    *) if gobuild_current; then exit 0; fi ;;
  esac
  command -v go >/dev/null 2>&1 || { echo "$me: go not found" >&2; exit 1; }
}

gobuild_run() {
  local dir=$1 jobs=$2 pkg=$3
  shift 3
  mkdir -p "$(dirname "$out")"
  # nice and -p 1 (JOBS empty): on a developer's machine the build shares two cores with other
  # work; in CI (CI set) nothing else runs while ./dev test builds, so it takes every core.
  # -mod=readonly: go.sum decides, nothing is resolved anew.
  jobs=${jobs:-$([ -n "${CI:-}" ] && nproc || echo 1)}
  (cd "$dir" && GOFLAGS="-mod=readonly -buildvcs=false" nice -n 19 go build -p "$jobs" \
    -trimpath "$@" -o "$out.tmp" "$pkg")
  mv -f "$out.tmp" "$out"
  echo "$stamp" >"$out.stamp"
}
