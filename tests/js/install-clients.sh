#!/usr/bin/env bash
# The HTTP server's non-Python test clients (tests/test_serve_clients.py): headless
# Chromium (Debian's package) and zarrita.js in Node, from this folder's lock file.
# Installs only what is missing: Debian's npm conflicts with Node.js packages that
# bring their own npm (NodeSource's).
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi
cd "$(dirname "$0")" && npm ci --no-audit --no-fund --silent
