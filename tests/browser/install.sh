#!/usr/bin/env bash
# Install what the client tests need, skipping anything already present (idempotent):
#   - Debian packages: chromium (the browser driven by playback_test.js), ffmpeg (ffprobe for
#     tests/clients/ffprobe_test.sh, and edge/demo/make-clip.sh), libnss3-tools (certutil, for
#     tests that trust a local CA instead of --ignore-certificate-errors), nodejs + npm if absent
#   - npm packages pinned in package-lock.json (playwright-core only), via `npm ci`, when
#     node_modules is missing or older than package.json / package-lock.json.
# Never downloads a browser: playwright-core drives Debian's /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null && SUDO="sudo" || { echo "install.sh: need root (or sudo) to install Debian packages" >&2; }
fi

need=""
for p in chromium ffmpeg libnss3-tools ca-certificates; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need="$need $p"
done
command -v node >/dev/null || need="$need nodejs"
command -v npm >/dev/null || need="$need npm"
if [ -n "$need" ]; then
  echo "installing Debian packages:$need"
  $SUDO apt-get update -q
  $SUDO apt-get install -y --no-install-recommends $need
else
  echo "Debian packages: all present (chromium, ffmpeg, libnss3-tools, node, npm)"
fi

# playwright-core 1.65 needs Node.js >= 20 (Debian 12's own nodejs is 18).
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "install.sh: Node.js $(node --version) is too old; playwright-core needs >= 20" >&2
  exit 1
fi

stamp=node_modules/.package-lock.json   # written by npm on every install
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
  echo "npm ci (tests/browser)"
  npm ci --no-audit --no-fund --ignore-scripts
else
  echo "npm packages: up to date"
fi

echo "chromium $(dpkg-query -W -f='${Version}' chromium), ffmpeg $(dpkg-query -W -f='${Version}' ffmpeg)," \
     "node $(node --version), playwright-core $(node -p "require('./node_modules/playwright-core/package.json').version")"
