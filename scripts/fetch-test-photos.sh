#!/usr/bin/env bash
# fetch-test-photos.sh [CACHE_DIR]
#
# Builds the photo corpus that embed/imageprep's reference tests compare
# against Pillow. Nothing here is committed: the photos are scikit-image's
# bundled sample images (astronaut.png, coffee.png, chelsea.png, camera.png,
# rocket.jpg, ...; public domain / CC0, see skimage/data/README.txt), taken
# from Debian's python3-skimage package with `apt-get download` + `dpkg-deb -x`
# (the package is not installed). They are copied to
#
#     CACHE_DIR/skimage/*.{png,jpg,gif,tif}
#
# and a few are converted with Pillow into other formats and pixel modes so
# that every decode path is covered:
#
#     CACHE_DIR/derived/  CMYK JPEG, 4:2:0/4:2:2/4:4:4/progressive/grayscale
#                         JPEGs, JPEGs with EXIF orientation 2..8, palette PNG
#                         (with and without tRNS), 1-bit PNG, 16-bit gray PNG,
#                         RGBA and LA PNGs, GIFs, lossy/lossless/alpha WebPs,
#                         BMP, TIFF, a tiny (upscaled) and an extreme-aspect PNG
#
# CACHE_DIR defaults to third_party/test-photos under the repository root
# (git-ignored). Idempotent: when CACHE_DIR/.complete matches this script's
# corpus version it does nothing. Always prints CACHE_DIR as the last line of
# stdout.
#
# Needs: apt-get + dpkg-deb (Debian's package archive reachable on the first
# run), and a python3 with Pillow + numpy for the conversions. When no such
# python is found and we run as root, it installs Debian's python3-pil and
# python3-numpy with apt-get (what CI needs anyway for the reference tests).
set -euo pipefail

# Bump when the corpus below changes, so caches get rebuilt.
CORPUS_VERSION=2
# Pinned so the corpus is reproducible; override if Debian drops this version.
SKIMAGE_DEB=${SKIMAGE_DEB:-python3-skimage=0.19.3-8}

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/.." && pwd)
cache_dir=${1:-$repo_root/third_party/test-photos}
mkdir -p "$cache_dir"
cache_dir=$(cd "$cache_dir" && pwd)

if [[ -f $cache_dir/.complete ]] && [[ $(cat "$cache_dir/.complete") == "$CORPUS_VERSION" ]]; then
	echo "fetch-test-photos: up to date" >&2
	echo "$cache_dir"
	exit 0
fi

for tool in apt-get dpkg-deb; do
	command -v "$tool" >/dev/null || { echo "fetch-test-photos: $tool is required" >&2; exit 1; }
done

# find_python prints a python3 that can import PIL and numpy (pyenv shims
# often shadow Debian's /usr/bin/python3, which is where python3-pil lives).
find_python() {
	local p
	for p in ${LEMON_PYTHON:-} python3 /usr/bin/python3; do
		if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import PIL, numpy' >/dev/null 2>&1; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

py=$(find_python || true)
if [[ -z $py ]]; then
	if [[ $(id -u) == 0 ]]; then
		echo "fetch-test-photos: installing python3-pil python3-numpy with apt-get" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pil python3-numpy >&2 ||
			{ apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pil python3-numpy >&2; }
		py=$(find_python || true)
	fi
	[[ -n $py ]] || { echo "fetch-test-photos: need a python3 with PIL and numpy (apt-get install python3-pil python3-numpy)" >&2; exit 1; }
fi

tmp=$(mktemp -d "$cache_dir/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# apt-get download writes into the current directory; it warns (harmlessly)
# about running unsandboxed when root cannot hand the directory to _apt.
if ! (cd "$tmp" && apt-get download -q "$SKIMAGE_DEB" >&2); then
	echo "fetch-test-photos: apt-get download failed; running apt-get update and retrying" >&2
	apt-get update -q >&2
	(cd "$tmp" && apt-get download -q "$SKIMAGE_DEB" >&2)
fi
dpkg-deb -x "$tmp"/python3-skimage_*.deb "$tmp/x"
data=$tmp/x/usr/lib/python3/dist-packages/skimage/data
[[ -f $data/astronaut.png ]] || { echo "fetch-test-photos: $SKIMAGE_DEB has no skimage/data/astronaut.png" >&2; exit 1; }

rm -rf "$cache_dir/skimage" "$cache_dir/derived"
mkdir -p "$cache_dir/skimage" "$cache_dir/derived"
cp "$data"/*.png "$data"/*.jpg "$data"/*.gif "$data"/README.txt "$cache_dir/skimage/"
# Only the single-page 8-bit TIFF; the others are 16-bit or unreadable by Pillow.
cp "$data"/multipage.tif "$cache_dir/skimage/"

"$py" - "$cache_dir/skimage" "$cache_dir/derived" <<'PY'
import io, sys
import numpy as np
from PIL import Image

src, out = sys.argv[1], sys.argv[2]
def o(name): return f"{src}/{name}"
def d(name): return f"{out}/{name}"

astro = Image.open(o("astronaut.png")).convert("RGB")  # 512x512
coffee = Image.open(o("coffee.png")).convert("RGB")    # 600x400
chelsea = Image.open(o("chelsea.png")).convert("RGB")  # 451x300
camera = Image.open(o("camera.png")).convert("L")      # 512x512
rocket = Image.open(o("rocket.jpg")).convert("RGB")    # 640x427

# JPEG variants: chroma subsampling 4:4:4 / 4:2:2 / 4:2:0, progressive, gray, CMYK.
coffee.save(d("coffee_444.jpg"), quality=90, subsampling=0)
coffee.save(d("coffee_422.jpg"), quality=90, subsampling=1)
coffee.save(d("coffee_420.jpg"), quality=90, subsampling=2)
chelsea.save(d("chelsea_progressive.jpg"), quality=85, progressive=True)
camera.save(d("camera_gray.jpg"), quality=90)
# Pillow writes CMYK JPEGs Adobe-style (inverted, with an APP14 marker).
astro.convert("CMYK").save(d("astronaut_cmyk.jpg"), quality=90)
# Odd sizes exercise the chroma edge handling of the upsampler.
chelsea.crop((0, 0, 449, 297)).save(d("chelsea_odd_420.jpg"), quality=90, subsampling=2)

# EXIF orientation 2..8 on a non-square photo (orientation 1 = untagged).
for orient in range(1, 9):
    exif = Image.Exif()
    exif[0x0112] = orient
    chelsea.save(d(f"chelsea_exif{orient}.jpg"), quality=90, exif=exif.tobytes())

# PNG pixel modes.
pal = chelsea.quantize(colors=200)  # mode P
pal.save(d("chelsea_palette.png"))
pal.save(d("chelsea_palette_trns.png"), transparency=7)
camera.convert("1").save(d("camera_1bit.png"))  # mode "1", dithered
g16 = (np.asarray(camera, dtype=np.uint16) * 257 + np.arange(512, dtype=np.uint16) % 257)
Image.fromarray(g16.astype(np.uint16)).save(d("camera_gray16.png"))  # opens as mode I
yy, xx = np.mgrid[0:512, 0:512]
r = np.hypot(yy - 256, xx - 256)
alpha = np.clip(255 * (1.2 - r / 220), 0, 255).astype(np.uint8)  # 0 and 255 regions + ramp
rgba = np.dstack([np.asarray(astro), alpha])
Image.fromarray(rgba, "RGBA").save(d("astronaut_rgba.png"))
la = np.dstack([np.asarray(camera), alpha])
Image.fromarray(la, "LA").save(d("camera_la.png"))
coffee.crop((0, 0, 16, 11)).save(d("coffee_tiny.png"))       # upscaled to 224
coffee.crop((0, 180, 600, 215)).save(d("coffee_strip.png"))  # 600x35, extreme aspect

# GIF (first frame, palette).
chelsea.save(d("chelsea.gif"))
pal.save(d("chelsea_trns.gif"), transparency=7)

# WebP: lossy (even/odd sizes exercise the chroma upsampler's edges),
# lossless, lossy with alpha.
astro.save(d("astronaut_lossy.webp"), quality=90)
chelsea.save(d("chelsea_lossy.webp"), quality=80)
chelsea.crop((0, 0, 449, 297)).save(d("chelsea_odd_lossy.webp"), quality=75)
coffee.save(d("coffee_lossless.webp"), lossless=True)
Image.fromarray(rgba, "RGBA").save(d("astronaut_alpha.webp"), quality=90)

# BMP and TIFF.
coffee.save(d("coffee.bmp"))
rocket.save(d("rocket.tif"))
PY

echo "$CORPUS_VERSION" >"$cache_dir/.complete"
echo "fetch-test-photos: wrote $(find "$cache_dir/skimage" "$cache_dir/derived" -type f | wc -l) files" >&2
echo "$cache_dir"
