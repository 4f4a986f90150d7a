#!/usr/bin/env bash
# A static HTML API reference (Redoc) rendered from openapi.json, the same
# document docs/api/ is generated from. Not committed: it lands in
# target/api-reference.html. Needs npm (it fetches @redocly/cli once).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/api-reference.html}
mkdir -p "$(dirname "$out")"
npx --yes @redocly/cli@2.77.0 build-docs openapi.json --output "$out"
echo "wrote $out"
