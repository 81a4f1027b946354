#!/usr/bin/env bash
# Copy the web console's front-end packages (pinned in console/package.json
# and package-lock.json, from the npm registry) into console/static, where
# go:embed takes them into the binary. The copies are committed, so building
# needs no npm; `make check-generated` runs this and fails on a difference.
set -euo pipefail
cd "$(dirname "$0")/../console"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
cp node_modules/htmx.org/dist/htmx.min.js static/htmx.min.js
