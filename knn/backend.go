package knn

import (
	"fmt"
	"slices"
	"strings"
)

// A backend computes one mr x nr tile of dot products and filters it.
//
// Rows reach the kernel packed into micro-panels of 32-bit words (see packPanels): a float32
// coordinate per word, or, for a bf16 backend, two coordinates rounded to bfloat16 per word.
// A bf16 selection is coarser (about 3 significant digits), which the candidate window
// absorbs (see window); the final distances are float64 whatever the backend.
//
// kernel(a, b, words, c, rowThr, colThr, masks):
//   - a is a packed A micro-panel: words*mr words, a[t*mr+i] = row i's word t;
//   - b is a packed B micro-panel: words*nr words, b[t*nr+j] = row j's word t;
//   - c receives the tile row-major: c[i*nr+j] = <A row i, B row j> in float32;
//   - masks[i] gets bit j set when c[i*nr+j] >= rowThr[i], and masks[mr+i] bit j when
//     c[i*nr+j] >= colThr[j] (NaN never passes);
//   - the result is the OR of masks[0:mr] in its low 32 bits and of masks[mr:] in its high 32
//     bits, so zero means nothing in the tile is worth looking at (the common case).
type backend struct {
	name   string
	dev    device // a device backend (see device.go): the kernel is unused
	bf16   bool   // words hold two bfloat16 coordinates; otherwise one float32
	kernel func(a, b []uint32, words int, c []float32, rowThr, colThr []float32, masks *[2 * mr]uint32) uint64
}

// words is how many packed words a row of dim coordinates takes.
func (be *backend) words(dim int) int {
	if be.bf16 {
		return (dim + 1) / 2
	}
	return dim
}

// Tile shape shared by all backends (packing depends on it). 14 x 32 fills 28 of the 32 AVX-512
// registers with accumulators, leaving room for two B vectors.
const (
	mr = 14
	nr = 32
)

// backends lists the backends available on this machine, fastest first. Architecture-specific
// files add theirs in init.
var backends = []*backend{{name: "go", kernel: kernelGo}}

// allBackendNames lists every backend this package knows, available here or not.
var allBackendNames = []string{"avx512bf16", "avx512", "go", "cuda"}

// KnownBackend reports whether name is a backend of this package ("auto" included), whether
// or not this machine can run it.
func KnownBackend(name string) bool {
	return name == "" || name == "auto" || slices.Contains(allBackendNames, name)
}

// Backends returns the names of the backends usable on this machine, fastest first.
// The first is what "" and "auto" select.
func Backends() []string {
	out := make([]string, len(backends))
	for i, b := range backends {
		out[i] = b.name
	}
	return out
}

// CheckBackend reports whether the named backend can run here ("cuda": whether a GPU, its
// driver and NVRTC can be loaded).
func CheckBackend(name string) error {
	_, err := pickBackend(name)
	return err
}

func pickBackend(name string) (*backend, error) {
	if name == "" || name == "auto" {
		return backends[0], nil
	}
	if name == "cuda" {
		d, err := getDevice(name)
		if err != nil {
			return nil, fmt.Errorf("knn: backend cuda: %w", err)
		}
		return &backend{name: name, dev: d}, nil
	}
	for _, b := range backends {
		if b.name == name {
			return b, nil
		}
	}
	for _, n := range allBackendNames {
		if n == name {
			return nil, fmt.Errorf("knn: backend %q is not supported on this machine (available: %s)", name, strings.Join(Backends(), ", "))
		}
	}
	return nil, fmt.Errorf("knn: unknown backend %q (known: auto, %s)", name, strings.Join(allBackendNames, ", "))
}

// PacksBF16 says whether the named backend ("" or "auto": the one picked here) holds rows as
// bfloat16 while selecting, which halves the memory of the packed copy of each block.
func PacksBF16(name string) bool {
	if name == "" || name == "auto" {
		return backends[0].bf16
	}
	for _, b := range backends {
		if b.name == name {
			return b.bf16
		}
	}
	return false
}
