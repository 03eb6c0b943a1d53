#!/usr/bin/env bash
# Fetch the browser libraries the dashboard uses from the npm registry and copy their built
# files, with their licences, into trio_stream/web/ (committed: installing needs no build).
# Usage: scripts/vendor-web.sh   (needs npm; pins the versions below)
set -euo pipefail
cd "$(dirname "$0")/.."

XTERM_VERSION=6.0.0
FIT_VERSION=0.11.0
WEB=trio_stream/web
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

(cd "$TMP" && npm pack --silent "@xterm/xterm@$XTERM_VERSION" "@xterm/addon-fit@$FIT_VERSION" >/dev/null)
mkdir -p "$TMP/xterm" "$TMP/fit"
tar -xzf "$TMP/xterm-xterm-$XTERM_VERSION.tgz" -C "$TMP/xterm"
tar -xzf "$TMP/xterm-addon-fit-$FIT_VERSION.tgz" -C "$TMP/fit"

# The source-map comments name files that are not shipped: drop them.
sed '/^\/\/# sourceMappingURL=/d' "$TMP/xterm/package/lib/xterm.js" >"$WEB/xterm.js"
cp "$TMP/xterm/package/css/xterm.css" "$WEB/xterm.css"
cp "$TMP/xterm/package/LICENSE" "$WEB/xterm.LICENSE"
sed '/^\/\/# sourceMappingURL=/d' "$TMP/fit/package/lib/addon-fit.js" >"$WEB/xterm-addon-fit.js"
cp "$TMP/fit/package/LICENSE" "$WEB/xterm-addon-fit.LICENSE"
echo "vendored @xterm/xterm $XTERM_VERSION and @xterm/addon-fit $FIT_VERSION into $WEB"
