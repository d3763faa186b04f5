#!/bin/sh
# berth's version, from git, for the packages (hack/package.sh) and
# anything else that names a build. VERSION in the environment wins.
#   a tag vX.Y.Z on HEAD          -> X.Y.Z
#   N commits after tag vX.Y.Z    -> X.Y.Z+gitN.SHA
#   no tag yet                    -> 0.0.0~gitYYYYMMDDhhmmss.SHA (the commit's
#                                    UTC time, so later commits sort higher)
# Both dpkg and rpm sort "~" before anything and "+" after the release, so
# every later commit is an upgrade of an earlier one in either format.
set -eu
if [ -n "${VERSION:-}" ]; then echo "$VERSION"; exit 0; fi
cd "$(dirname "$0")/.."
sha=$(git rev-parse --short=10 HEAD)
if d=$(git describe --tags --match 'v[0-9]*' HEAD 2>/dev/null); then
	case "$d" in
	*-*-g*) echo "$d" | sed -E 's/^v//; s/-([0-9]+)-g([0-9a-f]+)$/+git\1.\2/' ;;
	*) echo "${d#v}" ;;
	esac
	exit 0
fi
echo "0.0.0~git$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S HEAD).$sha"
