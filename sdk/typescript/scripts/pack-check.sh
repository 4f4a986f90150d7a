#!/usr/bin/env bash
# `npm pack` holds only the built files, their types and the README, and the
# tarball installs into an empty project that imports it (ESM, with types).
set -euo pipefail
cd "$(dirname "$0")/.."
npm run -s build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tarball=$(npm pack --silent --pack-destination "$work")
files=$(tar -tzf "$work/$tarball" | sort)
echo "$files"
unexpected=$(echo "$files" | grep -vE '^package/(dist/[a-z]+\.(js|d\.ts)|README\.md|package\.json)$' || true)
if [ -n "$unexpected" ]; then
  echo "pack-check: the tarball holds more than the built files, types and README:" >&2
  echo "$unexpected" >&2
  exit 1
fi
for needed in package/dist/index.js package/dist/index.d.ts package/README.md; do
  echo "$files" | grep -qx "$needed" || { echo "pack-check: $needed is missing" >&2; exit 1; }
done
mkdir "$work/app"
cd "$work/app"
npm init -y >/dev/null
npm pkg set type=module >/dev/null
npm install --silent --no-audit --no-fund "$work/$tarball" typescript@5.9.3 >/dev/null
cat > main.ts <<'TS'
import { CapyDB, CapyDBError, type Job } from "@capydb/sdk";
const capy = new CapyDB({ baseUrl: "http://127.0.0.1:9", token: "capy_live_x" });
const state: Job["state"] = "completed";
console.log(typeof capy.waitForJob, new CapyDBError(403, "m", null, null).status, state);
TS
npx tsc --strict --module nodenext --moduleResolution nodenext --target es2022 --lib es2022,dom --outDir out main.ts
out=$(node out/main.js)
[ "$out" = "function 403 completed" ] || { echo "pack-check: the installed package printed: $out" >&2; exit 1; }
echo "pack-check: ok ($tarball installs and imports with its types)"
