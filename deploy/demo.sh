#!/usr/bin/env bash
# `make demo`: the main job on the bundled example site, into a sandbox root.
# Usage: demo.sh KITCTL SITE_REPO SANDBOX_ROOT
set -euo pipefail
kitctl=$1 repo=$2 root=$3
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. validate the site repo ($repo)"
"$kitctl" validate --repo "$repo"
