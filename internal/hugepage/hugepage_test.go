package hugepage

import (
	"reflect"
	"testing"
	"unsafe"
)

func TestAllocFree(t *testing.T) {
	total0, out0 := Stats()
	n := (MinBytes + 12345) / 4
	s := Alloc[float32](n)
	if len(s) != n || cap(s) != n {
		t.Fatalf("len %d cap %d, want %d", len(s), cap(s), n)
	}
	total, out := Stats()
	if Supported {
		if total-total0 < int64(n)*4 || out-out0 < int64(n)*4 {
			t.Fatalf("mapped %d (outstanding %d) more bytes, want at least %d", total-total0, out-out0, n*4)
		}
		if uintptr(unsafe.Pointer(&s[0]))%hugePage != 0 {
			t.Error("buffer does not start on a huge page boundary")
		}
	}
	for i, v := range s {
		if v != 0 {
			t.Fatalf("element %d is %v, want zero", i, v)
		}
	}
	for i := range s {
		s[i] = float32(i)
	}
	if s[n-1] != float32(n-1) {
		t.Fatal("buffer does not hold what was written")
	}
	Free(s[:10]) // a re-slice keeping the first element frees the whole buffer
	if _, out := Stats(); out != out0 {
		t.Fatalf("%d bytes outstanding after Free, want %d", out, out0)
	}
	Free(s[:0:0]) // nothing to free: harmless
}

func TestSmallAndHeapSlices(t *testing.T) {
	total0, out0 := Stats()
	small := Alloc[uint32](16)
	Free(small)
	Free(make([]uint32, MinBytes)) // not from Alloc: left to the garbage collector
	if total, out := Stats(); total != total0 || out != out0 {
		t.Fatalf("small buffers were mapped: total %d->%d, outstanding %d->%d", total0, total, out0, out)
	}
}

func TestPointersRefused(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Alloc of a type with pointers did not panic")
		}
	}()
	type withString struct {
		_ float32
		_ string
	}
	Alloc[withString](MinBytes)
}

func TestHasPointers(t *testing.T) {
	type cand struct {
		_ float32
		_ int32
	}
	type arr [4]cand
	type ptrs struct{ _ *int }
	for _, c := range []struct {
		got, want bool
	}{
		{hasPointersOf[float32](), false}, {hasPointersOf[cand](), false}, {hasPointersOf[arr](), false},
		{hasPointersOf[string](), true}, {hasPointersOf[ptrs](), true}, {hasPointersOf[[]int](), true},
	} {
		if c.got != c.want {
			t.Errorf("got %v, want %v", c.got, c.want)
		}
	}
}

func hasPointersOf[T any]() bool { return hasPointers(reflect.TypeFor[T]()) }
