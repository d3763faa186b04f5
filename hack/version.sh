#!/bin/sh
# berth's version, from git, for the packages (hack/package.sh) and
# anything else that names a build. VERSION in the environment wins.
#   a release tag vX.Y.Z on HEAD  -> X.Y.Z
#   N commits after vX.Y.Z        -> X.Y.Z+gitN.SHA
#   no release tag yet            -> 0.0.0~gitYYYYMMDDhhmmss.N.SHA (the
#                                    commit's UTC time, then the number of
#                                    commits: two commits in one second
#                                    still sort by N, not by their hashes,
#                                    which dpkg and rpm order differently)
#   uncommitted changes           -> the same with .dirty at the end
# Both dpkg and rpm sort "~" before anything and "+" after the release, so
# every later commit is an upgrade of an earlier one in either format.
# Pre-release tags (v1.2.3-rc1) are not release tags: a "-" would be
# dpkg's revision separator and is invalid in an rpm version.
set -eu
if [ -n "${VERSION:-}" ]; then echo "$VERSION"; exit 0; fi
cd "$(dirname "$0")/.."
sha=$(git rev-parse --short=10 HEAD)
dirty=
git diff --quiet HEAD -- 2>/dev/null || dirty=.dirty
if d=$(git describe --tags --match 'v[0-9]*' --exclude '*-*' HEAD 2>/dev/null); then
	case "$d" in
	*-*-g*) echo "$d$dirty" | sed -E 's/^v//; s/-([0-9]+)-g([0-9a-f]+)/+git\1.\2/' ;;
	*) echo "${d#v}$dirty" ;;
	esac
	exit 0
fi
echo "0.0.0~git$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S HEAD).$(git rev-list --count HEAD).$sha$dirty"
