#!/usr/bin/env bash
# Unpack a results archive that left the working tree for git history (results/ARCHIVES.md lists each: its path,
# the commit that last held it, its sha256).
#   bash scripts/results_archive.sh results/h200x2-2026-11-29/runs.tar.xz /tmp/r   # unpacks it into /tmp/r
#   bash scripts/results_archive.sh --list
# Why they left: every GPU call carries the working tree, 64 MiB at most, and the wheels and RE-ARC travel in what
# the tree leaves (scripts/carry_parts.sh). With the tree at 62.9 MB on 2026-12-06 that was seven calls, and about
# 1.7 MB more would have left no call room for the largest wheel. The older sessions' run records are read rarely
# (to pair a new run with an old one), and history keeps them byte for byte; a path still in the tree is unpacked
# from there.
set -euo pipefail
cd "$(dirname "$0")/.."
list=results/ARCHIVES.md
if [ "${1:-}" = --list ]; then grep -E '^\| results/' "$list" | cut -d'|' -f2 | tr -d ' '; exit 0; fi
path=${1:?usage: results_archive.sh PATH DEST | --list}
dest=${2:?usage: results_archive.sh PATH DEST | --list}
mkdir -p "$dest"
if [ -f "$path" ]; then tar -xJf "$path" -C "$dest"; echo "$path: unpacked into $dest (from the tree)"; exit 0; fi
row=$(grep -F "| $path |" "$list" || true)
[ -n "$row" ] || { echo "error: $path: neither in the tree nor in $list" >&2; exit 1; }
want=$(cut -d'|' -f4 <<<"$row" | tr -d ' `')
commit=$(cut -d'|' -f5 <<<"$row" | tr -d ' `')
git cat-file -e "$commit:$path" 2>/dev/null || {
  echo "error: $path: commit $commit is not in this clone's history (a shallow clone? git fetch --unshallow)" >&2
  exit 1
}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
git show "$commit:$path" >"$tmp"
got=$(sha256sum "$tmp" | cut -d' ' -f1)
[ "$got" = "$want" ] || { echo "error: $path at $commit: sha256 $got, not $list's $want" >&2; exit 1; }
tar -xJf "$tmp" -C "$dest"
echo "$path: unpacked into $dest (from commit $commit)"
