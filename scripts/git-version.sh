#!/bin/sh
# SPDX-License-Identifier: MIT
# Print the version blockd was built from, as `git describe` does:
#   0.1.0               a release tag v0.1.0, clean
#   0.1.0-123-gabcdef   123 commits after it (or, with no tag, since the
#                       first commit), at commit abcdef
#   ...-dirty           with uncommitted changes to tracked files
# meson's vcs_tag() runs it in the source tree; outside git it fails and
# meson falls back to the project version.  Argument: that version.
set -eu
base=$1
git rev-parse --git-dir >/dev/null 2>&1 || exit 1
if desc=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
    echo "${desc#v}"
    exit 0
fi
count=$(git rev-list --count HEAD)
hash=$(git rev-parse --short HEAD)
dirty=
if ! git diff-index --quiet HEAD -- 2>/dev/null; then
    dirty=-dirty
fi
echo "$base-$count-g$hash$dirty"
