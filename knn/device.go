package knn

import (
	"fmt"
	"runtime"
	"sync"
)

// Device backends run the selection stage on an accelerator: the device holds both blocks'
// rows and computes float32 dot products of chunk pairs, returning only the pairs that pass the
// current candidate thresholds; the host keeps the same candidate sets and does the same float64
// re-ranking as the CPU backends, so results are identical whatever ran the products.
//
// A device computes every dot in float32 with one accumulator per pair (error within γ_dim of
// exact, the bound window uses for float32 words).
type device interface {
	// upload copies a block's rows (both modalities, row-major float32) to the device.
	upload(b *Block) (deviceBlock, error)
	// hits computes <a row i, b row j> in modality m for i in [a0,a1), j in [b0,b1) and appends
	// to out, in any order, each pair with dot >= rowThr[i-a0] as a row-side hit and, when
	// colThr is not nil, each pair with dot >= colThr[j-b0] as a column-side hit. With diag
	// (a and b the same block), row-side hits need j >= i and column-side hits j > i. It
	// returns ok false, and may have appended anything, when more than max hits were found.
	hits(m int, a, b deviceBlock, a0, a1, b0, b1 int, rowThr, colThr []float32, diag bool, max int, out []hit) (res []hit, ok bool, err error)
	free(deviceBlock)
}

type deviceBlock any

// hit is a pair that passed a threshold: a row-side hit is a candidate of row for row's set,
// a column-side hit a candidate of col for col's set.
type hit struct {
	row, col int32
	dot      float32
	colSide  bool
}

// Chunking of device work: rows of a per pass, and columns of b per pass, starting narrow so
// that the first pass of every row fills its candidate set cheaply and sets its threshold.
const (
	deviceRows       = 8192
	deviceFirstCols  = 256
	deviceCols       = 8192
	deviceMaxHits    = 1 << 22
	deviceMinSplitTo = 64
)

// openDevice opens the named device (replaced in tests by an emulator). A device is opened once
// per process and then shared.
var openDevice = func(name string) (device, error) {
	if name == "cuda" {
		return openCUDA()
	}
	return nil, fmt.Errorf("knn: unknown device %q", name)
}

var devices struct {
	sync.Mutex
	open map[string]device
}

func getDevice(name string) (device, error) {
	devices.Lock()
	defer devices.Unlock()
	if d, ok := devices.open[name]; ok {
		return d, nil
	}
	d, err := openDevice(name)
	if err != nil {
		return nil, err
	}
	if devices.open == nil {
		devices.open = map[string]device{}
	}
	devices.open[name] = d
	return d, nil
}

// runDevice is run for a device backend.
func runDevice(dev device, a, b *Block, opt Options, pair bool) (forA, forB Lists, err error) {
	diag := pair && a == b
	nproc := max(1, runtime.GOMAXPROCS(0))
	fp32 := &backend{name: "device"} // float32 words: what the window assumes
	sa := prepareSide(fp32, a, mr, nproc, [2][]int32{}, false)
	sb := sa
	if !diag {
		sb = prepareSide(fp32, b, mr, nproc, [2][]int32{}, false)
	}
	var rows, cols [2]*topSet
	for m := range 2 {
		rows[m] = newTopSet(a.Len(), a.Len(), opt.K, window(opt.Metric, a.Dim, sa, m, sb.stats[m]))
		switch {
		case diag:
			cols[m] = newTopSet(b.Len(), b.Len(), opt.K, rows[m].win)
			cols[m].thr = rows[m].thr
		case pair:
			cols[m] = newTopSet(b.Len(), b.Len(), opt.K, window(opt.Metric, a.Dim, sb, m, sa.stats[m]))
		}
	}
	defer func() {
		for m := range 2 {
			rows[m].release()
			if cols[m] != nil {
				cols[m].release()
			}
		}
	}()

	da, err := dev.upload(a)
	if err != nil {
		return Lists{}, Lists{}, err
	}
	defer dev.free(da)
	db := da
	if !diag {
		if db, err = dev.upload(b); err != nil {
			return Lists{}, Lists{}, err
		}
		defer dev.free(db)
	}

	// Progress: each pass counts its size in tiles, as the CPU path counts its groups.
	passes := devicePasses(a.Len(), b.Len(), diag)
	var prog progress
	prog.report = opt.Progress
	total := int64(a.Len()) * rescoreTilesPerRow
	if pair && !diag {
		total += int64(b.Len()) * rescoreTilesPerRow
	}
	for _, p := range passes {
		total += p.tiles()
	}
	prog.total.Store(total)

	var sel selector
	var buf []hit
	for _, p := range passes {
		for m := range 2 {
			if buf, err = devicePass(dev, &sel, buf, m, da, db, p.a0, p.a1, p.b0, p.b1, a, b, rows[m], cols[m], diag); err != nil {
				return Lists{}, Lists{}, err
			}
		}
		prog.add(p.tiles())
	}

	if diag {
		for m := range 2 {
			rows[m].absorb(cols[m], &sel)
			cols[m].release()
		}
	}
	forA = lists(rows, sa, sb, a, b, opt, nproc, &prog)
	if diag {
		return forA, forA, nil
	}
	if pair {
		forB = lists(cols, sb, sa, b, a, opt, nproc, &prog)
	}
	return forA, forB, nil
}

// chunkPass is one pass of device work: rows [a0,a1) of a against rows [b0,b1) of b.
type chunkPass struct{ a0, a1, b0, b1 int }

// tiles is the pass's size in the progress units of the CPU path (tiles of mr x nr).
func (p chunkPass) tiles() int64 { return int64(p.a1-p.a0) * int64(p.b1-p.b0) / (mr * nr) }

// devicePasses lists the passes of a search of na rows against nb. In a self-join (diag) row
// chunks go last first and only meet columns from their own first row on, for the same
// reason as the CPU path: columns then meet rows whose thresholds are already set.
func devicePasses(na, nb int, diag bool) []chunkPass {
	var out []chunkPass
	chunks := (na + deviceRows - 1) / deviceRows
	for t := range chunks {
		c := t
		if diag {
			c = chunks - 1 - t
		}
		a0, a1 := c*deviceRows, min((c+1)*deviceRows, na)
		b0 := 0
		if diag {
			b0 = a0
		}
		for width := deviceFirstCols; b0 < nb; width = deviceCols {
			b1 := min(b0+width, nb)
			out = append(out, chunkPass{a0, a1, b0, b1})
			b0 = b1
		}
	}
	return out
}

// devicePass runs one chunk pair on the device and pushes its hits; when there are too many
// hits for one buffer (thresholds not yet set) it splits the columns and tries each half, the
// first half raising the thresholds the second one is filtered with.
func devicePass(dev device, sel *selector, buf []hit, m int, da, db deviceBlock, a0, a1, b0, b1 int, a, b *Block, rows, cols *topSet, diag bool) ([]hit, error) {
	rowThr := make([]float32, a1-a0)
	for i := range rowThr {
		rowThr[i] = rows.threshold(a0 + i)
	}
	var colThr []float32
	if cols != nil {
		colThr = make([]float32, b1-b0)
		for j := range colThr {
			colThr[j] = cols.threshold(b0 + j)
		}
	}
	hits, ok, err := dev.hits(m, da, db, a0, a1, b0, b1, rowThr, colThr, diag, deviceMaxHits, buf[:0])
	if err != nil {
		return hits, err
	}
	if !ok {
		if b1-b0 <= deviceMinSplitTo {
			return hits, fmt.Errorf("knn: device: more than %d candidates in a %d x %d chunk", deviceMaxHits, a1-a0, b1-b0)
		}
		mid := b0 + (b1-b0)/2
		if hits, err = devicePass(dev, sel, hits, m, da, db, a0, a1, b0, mid, a, b, rows, cols, diag); err != nil {
			return hits, err
		}
		return devicePass(dev, sel, hits, m, da, db, a0, a1, mid, b1, a, b, rows, cols, diag)
	}
	for _, h := range hits {
		row, col := int(h.row), int(h.col)
		if !h.colSide {
			if h.dot >= rows.threshold(row) && b.Pos[col] != selfOf(a, row) {
				rows.push(row, cand{h.dot, h.col}, sel)
			}
		} else if h.dot >= cols.threshold(col) && a.Pos[row] != selfOf(b, col) {
			cols.push(col, cand{h.dot, h.row}, sel)
		}
	}
	return hits, nil
}
