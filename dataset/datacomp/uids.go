package datacomp

import (
	"bufio"
	"cmp"
	"container/heap"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/lemon-curation/lemon/internal/npy"
	"github.com/lemon-curation/lemon/storage"
)

// UID is a DataComp uid, a 128-bit hash written as 32 hex digits, as its high and low 64-bit
// halves: the form of DataComp's subset files (numpy dtype "u8,u8", sorted), which its tooling
// builds as (int(uid[:16], 16), int(uid[16:32], 16)).
type UID [2]uint64

// UIDBytes is the size of a UID in a subset file.
const UIDBytes = 16

// ParseUID reads a uid of exactly 32 lowercase hex digits, as DataComp's uid column holds
// them. Uppercase digits are refused, so that two ids that differ as strings (and so are both
// kept by the duplicate check) never give one UID.
func ParseUID(s string) (UID, error) {
	if len(s) != 32 {
		return UID{}, fmt.Errorf("uid %q is not 32 lowercase hex digits (it has %d characters)", s, len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return UID{}, fmt.Errorf("uid %q is not 32 lowercase hex digits (%q at %d)", s, c, i+1)
		}
	}
	hi, _ := strconv.ParseUint(s[:16], 16, 64)
	lo, _ := strconv.ParseUint(s[16:], 16, 64)
	return UID{hi, lo}, nil
}

// String is the uid's 32 hex digits.
func (u UID) String() string { return fmt.Sprintf("%016x%016x", u[0], u[1]) }

// Compare orders uids as numpy sorts a "u8,u8" array: by the high half, then the low.
func (u UID) Compare(v UID) int {
	if c := cmp.Compare(u[0], v[0]); c != 0 {
		return c
	}
	return cmp.Compare(u[1], v[1])
}

// SortUIDs sorts uids in place, as numpy's sort of a "u8,u8" array does.
func SortUIDs(uids []UID) { slices.SortFunc(uids, UID.Compare) }

// AppendUID appends u as a subset file stores it: two little-endian uint64, high half first.
func AppendUID(b []byte, u UID) []byte {
	b = binary.LittleEndian.AppendUint64(b, u[0])
	return binary.LittleEndian.AppendUint64(b, u[1])
}

// DecodeUID reads a UID that AppendUID wrote at the start of b.
func DecodeUID(b []byte) UID {
	return UID{binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])}
}

// WriteUIDRun writes uids, sorted, to p (atomically) as the bare pairs of a subset file, with
// no header: one sorted run for MergeUIDRuns.
func WriteUIDRun(ctx context.Context, p string, uids []UID) error {
	SortUIDs(uids)
	b := make([]byte, 0, len(uids)*UIDBytes)
	for _, u := range uids {
		b = AppendUID(b, u)
	}
	return storage.WriteFile(ctx, p, b)
}

// MergeUIDRuns writes p, a DataComp subset file (.npy, numpy dtype "u8,u8", sorted ascending)
// of every uid in runs (files WriteUIDRun wrote), merged in a stream: memory holds a buffer per
// run, not the uids. The file is written under a temporary name and renamed when complete. A
// uid in two runs is an error. It returns how many uids p holds.
func MergeUIDRuns(ctx context.Context, p string, runs []string) (int64, error) {
	var n int64
	h := make(uidHeap, 0, len(runs))
	defer func() {
		for _, r := range h {
			r.rc.Close()
		}
	}()
	for _, run := range runs {
		size, err := storage.Size(ctx, run)
		if err != nil {
			return 0, err
		}
		if size%UIDBytes != 0 {
			return 0, fmt.Errorf("%s: %d bytes, not a whole number of %d-byte uids", run, size, UIDBytes)
		}
		n += size / UIDBytes
		rc, err := storage.Open(ctx, run)
		if err != nil {
			return 0, err
		}
		r := &uidRun{path: run, rc: rc, br: bufio.NewReaderSize(rc, 64<<10)}
		if ok, err := r.next(); err != nil {
			rc.Close()
			return 0, err
		} else if ok {
			h = append(h, r)
		} else {
			rc.Close()
		}
	}
	heap.Init(&h)
	w, err := storage.Create(ctx, p)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	bw.Write(npy.UIDPairsHeader(n))
	var buf []byte
	var written int64
	var last UID
	for len(h) > 0 {
		r := h[0]
		if written > 0 && r.cur.Compare(last) <= 0 {
			w.Abort()
			return 0, fmt.Errorf("%s: uid %s is in two runs (or a run is not sorted): %s", p, r.cur, r.path)
		}
		last = r.cur
		buf = AppendUID(buf[:0], r.cur)
		bw.Write(buf)
		written++
		ok, err := r.next()
		if err != nil {
			w.Abort()
			return 0, err
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			r.rc.Close()
			heap.Pop(&h)
		}
	}
	if err := bw.Flush(); err != nil {
		w.Abort()
		return 0, fmt.Errorf("writing %s: %w", p, err)
	}
	if written != n {
		w.Abort()
		return 0, fmt.Errorf("%s: read %d uids from runs of %d", p, written, n)
	}
	return n, w.Commit()
}

// uidRun is one sorted run being merged, at its current uid.
type uidRun struct {
	path string
	rc   io.ReadCloser
	br   *bufio.Reader
	cur  UID
	b    [UIDBytes]byte
}

// next reads the run's next uid into cur; false at the run's end.
func (r *uidRun) next() (bool, error) {
	if _, err := io.ReadFull(r.br, r.b[:]); err == io.EOF {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("reading %s: %w", r.path, err)
	}
	r.cur = DecodeUID(r.b[:])
	return true, nil
}

type uidHeap []*uidRun

func (h uidHeap) Len() int           { return len(h) }
func (h uidHeap) Less(i, j int) bool { return h[i].cur.Compare(h[j].cur) < 0 }
func (h uidHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *uidHeap) Push(x any)        { *h = append(*h, x.(*uidRun)) }
func (h *uidHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	*h = old[:len(old)-1]
	return r
}
