#!/usr/bin/env bash
# fetch-onnxruntime.sh [DIR]
#
# Fetches the ONNX Runtime shared library (CPU build, linux x86-64) that the
# Go package embed/onnx loads through github.com/yalue/onnxruntime_go. The
# library is not committed. It ships inside the npm package
# onnxruntime-node@1.30.0 as package/bin/napi-v6/linux/x64/libonnxruntime.so.1,
# so this script downloads that package with `npm pack --ignore-scripts` (no
# install: onnxruntime-node's postinstall would download more), checks the
# tarball's pinned sha512, extracts just that file, checks its pinned sha256
# and writes
#
#     DIR/libonnxruntime.so.1
#     DIR/libonnxruntime.so -> libonnxruntime.so.1
#
# DIR defaults to third_party/onnxruntime under the repository root
# (git-ignored), which is where embed/onnx.LibraryPath looks (or point
# $LEMON_ONNXRUNTIME_LIB at the file).
#
# Idempotent: when the library is already there with the right content it
# does nothing. Always prints the library's path as its last line of stdout.
# Needs npm, tar and sha256sum/sha512sum, and the npm registry on the first
# run only. The tarball is about 110 MB; it is deleted after extraction.
set -euo pipefail

PKG=onnxruntime-node
VER=1.30.0
ORT_VERSION=1.30.0
MEMBER=package/bin/napi-v6/linux/x64/libonnxruntime.so.1
# sha512 of onnxruntime-node-1.30.0.tgz as published (npm dist.integrity
# sha512-twhs1C2C/BFkz1yc5OY0KIU2GUq6DURO7hD4bx5Q2Qy3nAMJwRXW8xU3NVczE29VA9lolLOYepoD8fjTGOfIqw==).
TGZ_SHA512=b7086cd42d82fc1164cf5c9ce4e634288536194aba0d444eee10f86f1e50d90cb79c0309c115d6f31537355733136f5503d96894b3987a9a03f1f8d318e7c8ab
# sha256 of the extracted libonnxruntime.so.1 (45828512 bytes).
SO_SHA256=ffb75a925ba05e47b235bb66e3e3911714a80b328a9c9425539feb204aa32a23
SO_NAME=libonnxruntime.so.1

case "$(uname -s)/$(uname -m)" in
Linux/x86_64) ;;
*)
	echo "fetch-onnxruntime: only linux/x86_64 is supported by this script (got $(uname -s)/$(uname -m));" >&2
	echo "fetch-onnxruntime: install ONNX Runtime $ORT_VERSION yourself and set LEMON_ONNXRUNTIME_LIB" >&2
	exit 1
	;;
esac

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
out_dir=${1:-$repo_root/third_party/onnxruntime}
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
out=$out_dir/$SO_NAME

for tool in npm tar sha256sum sha512sum; do
	command -v "$tool" >/dev/null || { echo "fetch-onnxruntime: $tool is required" >&2; exit 1; }
done

so_ok() { [[ -f $1 ]] && [[ $(sha256sum "$1" | cut -d' ' -f1) == "$SO_SHA256" ]]; }

link_and_print() {
	ln -sfn "$SO_NAME" "$out_dir/libonnxruntime.so"
	echo "$out"
}

if so_ok "$out"; then
	echo "fetch-onnxruntime: up to date (ONNX Runtime $ORT_VERSION)" >&2
	link_and_print
	exit 0
fi

tmp=$(mktemp -d "$out_dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "fetch-onnxruntime: npm pack $PKG@$VER (about 110 MB)" >&2
(cd "$tmp" && npm pack --ignore-scripts --silent "$PKG@$VER" >/dev/null)
tgz=$tmp/$PKG-$VER.tgz
got=$(sha512sum "$tgz" | cut -d' ' -f1)
if [[ $got != "$TGZ_SHA512" ]]; then
	echo "fetch-onnxruntime: sha512 mismatch for $PKG-$VER.tgz: got $got" >&2
	exit 1
fi

tar -xzf "$tgz" -C "$tmp" "$MEMBER"
if ! so_ok "$tmp/$MEMBER"; then
	echo "fetch-onnxruntime: sha256 mismatch for $MEMBER: got $(sha256sum "$tmp/$MEMBER" | cut -d' ' -f1)" >&2
	exit 1
fi
chmod 0755 "$tmp/$MEMBER"
mv -f "$tmp/$MEMBER" "$out"

echo "fetch-onnxruntime: wrote $out (ONNX Runtime $ORT_VERSION, CPU)" >&2
link_and_print
