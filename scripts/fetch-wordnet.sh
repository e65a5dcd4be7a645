#!/usr/bin/env bash
# fetch-wordnet.sh [DIR]
#
# Makes WordNet 3.0's noun index available to `lemon noise --kind noun`, which
# reads index.noun (the noun lemmas) and noun.exc (irregular plurals) from a
# WordNet dict directory. The data comes from Debian's `wordnet-base` package
# (WordNet licence, Architecture: all).
#
# Without DIR: if a dict directory already exists ($WNSEARCHDIR,
# /usr/share/wordnet, or third_party/wordnet/usr/share/wordnet under the
# repository root) it is used as is. Otherwise, as root, the script runs
# `apt-get install -y wordnet-base` (running `apt-get update` first if the
# package is unknown); as another user it runs `apt-get download wordnet-base`
# and unpacks the .deb with `dpkg-deb -x` into third_party/wordnet (git-ignored),
# which needs no privileges.
#
# With DIR: always the unprivileged route, unpacking into DIR.
#
# Idempotent. Always prints the dict directory (the one holding index.noun) as
# its last line of stdout; pass it to `lemon noise --wordnet`, or leave it to
# the default lookup, which searches the same places.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)

have_dict() { [[ -n $1 && -s $1/index.noun ]]; }

done_at() {
	echo "fetch-wordnet: using $1" >&2
	echo "$1"
	exit 0
}

unpack_into() {
	local dest=$1
	for tool in apt-get dpkg-deb; do
		command -v "$tool" >/dev/null || { echo "fetch-wordnet: $tool is required" >&2; exit 1; }
	done
	mkdir -p "$dest"
	dest=$(cd "$dest" && pwd)
	if have_dict "$dest/usr/share/wordnet"; then
		done_at "$dest/usr/share/wordnet"
	fi
	local tmp
	tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
	# Readable by the _apt user, which apt-get download drops to.
	chmod 755 "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	# apt-get download checks the .deb against the signed archive index.
	echo "fetch-wordnet: apt-get download wordnet-base" >&2
	(cd "$tmp" && apt-get download wordnet-base >&2)
	local deb
	deb=$(ls "$tmp"/wordnet-base_*.deb)
	dpkg-deb -x "$deb" "$tmp/x"
	if ! have_dict "$tmp/x/usr/share/wordnet"; then
		echo "fetch-wordnet: $deb has no usr/share/wordnet/index.noun" >&2
		exit 1
	fi
	rm -rf "$dest/usr"
	mv "$tmp/x/usr" "$dest/usr"
	done_at "$dest/usr/share/wordnet"
}

if [[ $# -ge 1 ]]; then
	unpack_into "$1"
fi

for d in "${WNSEARCHDIR:-}" /usr/share/wordnet "$repo_root/third_party/wordnet/usr/share/wordnet"; do
	if have_dict "$d"; then
		done_at "$d"
	fi
done

if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-cache show wordnet-base >/dev/null 2>&1; then
		apt-get update >&2
	fi
	echo "fetch-wordnet: apt-get install -y wordnet-base" >&2
	apt-get install -y --no-install-recommends wordnet-base >&2
	if have_dict /usr/share/wordnet; then
		done_at /usr/share/wordnet
	fi
	echo "fetch-wordnet: wordnet-base installed but /usr/share/wordnet/index.noun is missing" >&2
	exit 1
fi

unpack_into "$repo_root/third_party/wordnet"
