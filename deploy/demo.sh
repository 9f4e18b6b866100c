#!/usr/bin/env bash
# `make demo`: the main job on the bundled example site, into a sandbox root.
# Usage: demo.sh KITCTL SITE_REPO SANDBOX_ROOT
#
# validate -> plan against an empty root -> apply -> plan again (no changes) and a second
# apply that writes nothing -> audit verify. The sandbox root is emptied first, so every run
# starts the same way; no service is signalled and nothing outside the root is written.
# Only a folder that is empty or that an earlier demo made (it holds the marker file
# .kitting-demo-root) is ever emptied; any other existing path is refused.
# Any step that fails stops the demo with a non-zero exit status.
set -euo pipefail
kitctl=$1 repo=$2 root=$3
# The commands print what happened and the audit log keeps one line per action; info log
# lines on stderr would only repeat them.
export KITCTL_LOG_LEVEL=${KITCTL_LOG_LEVEL:-WARNING}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { printf '\ndemo failed: %s\n' "$*" >&2; exit 1; }
# Every file and folder under the root with its inode, modification time and size.
state_of() { find "$1" -printf '%p %i %T@ %s\n' | LC_ALL=C sort; }

# The root is deleted first: never a folder that holds the site repo or the current folder,
# and never one the demo did not make (no marker) unless it is empty.
marker=.kitting-demo-root
abs_root=$(realpath -m -- "$root")
for inside in "$(realpath -m -- "$repo")" "$PWD"; do
  [[ $abs_root != / && $inside/ != "$abs_root"/* ]] || fail "refusing to use $root as the sandbox root"
done
if [[ -L $root || (-e $root && ! -d $root) ]]; then
  fail "refusing to use $root as the sandbox root: it exists and is not a folder; choose another DEMO_ROOT"
elif [[ -d $root && ! -f $root/$marker && -n $(ls -A -- "$root") ]]; then
  fail "refusing to delete $root: it is not empty and no earlier demo made it (no $marker in it);
choose an empty or new folder as DEMO_ROOT, or remove $root yourself if it is a demo root"
fi
rm -rf -- "$root"
mkdir -p -- "$root"
echo "made by make demo (deploy/demo.sh); the next demo deletes this folder" >"$root/$marker"
empty=$(state_of "$root")

step "1. validate the site repo ($repo)"
"$kitctl" validate --repo "$repo"

step "2. plan: what would change on an empty server (sandbox root $root)"
code=0
plan=$("$kitctl" plan --repo "$repo" --root "$root" --no-diff --detailed-exitcode) || code=$?
[[ $code == 2 ]] || fail "plan exited $code; expected 2 (changes to make)"
# The action lines: from "Actions:" to the next blank line.
listed=$(awk '/^Actions:/ { on = 1; next } on && /^$/ { exit } on' <<<"$plan")
actions=$(wc -l <<<"$listed")
sed -n '1,/^Actions:/p' <<<"$plan"
head -n 4 <<<"$listed"
echo "  ... and $((actions - 4)) more: every PC's reservation, the boot menus, NFS, firewall, services"
echo "(without --no-diff, each action comes with a unified diff; --format markdown makes a PR comment)"
[[ $(state_of "$root") == "$empty" ]] || fail "plan wrote under $root"

step "3. apply into the sandbox root (--services none: nothing is reloaded for real)"
"$kitctl" apply --repo "$repo" --root "$root" --services none

step "4. plan again: nothing left to do; a second apply writes nothing"
code=0
plan=$("$kitctl" plan --repo "$repo" --root "$root" --detailed-exitcode) || code=$?
head -n 1 <<<"$plan"
[[ $code == 0 ]] || fail "plan after apply exited $code; expected 0 (no changes)"
before=$(state_of "$root")
"$kitctl" apply --repo "$repo" --root "$root" --services none | tail -n 1
[[ $(state_of "$root") == "$before" ]] || fail "the second apply changed files under $root"
files=$(find "$root" -type f ! -path "$root/$marker" | wc -l)
echo "All $files files under $root unchanged (same inode, modification time and size)."

step "5. the audit log: hash-chained, one line per action"
"$kitctl" audit verify --root "$root"
echo "Last lines of \`kitctl audit log --root $root\`:"
"$kitctl" audit log --root "$root" | tail -n 4

step "6. try next"
cat <<EOF
  Edit a file the reconciler owns, then plan: it shows the drift with its diff.
    echo 'dhcp-option=3,10.0.0.1' >> $root/etc/dnsmasq.d/kitting.conf
    $kitctl plan --repo $repo --root $root
    $kitctl apply --repo $repo --root $root --services none   # restores it, audited as drift_repaired
  Change the site (add a PC to $repo/departments/sales.yaml) and plan again.
  Every file it wrote:  find $root -type f
  As root: make lab    a whole kitting day rehearsed in network namespaces: the real controller,
                       dnsmasq, nfs-ganesha, sshd and nftables; PCs restore a real Clonezilla
                       image by multicast (docs/lab.md)
EOF
