// Package storagetest is the conformance suite every file system lemon writes to must pass:
// atomic commit, abort, listing, sizes, random-access reads and removal.
package storagetest

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/lemon-curation/lemon/storage"
)

// Run runs the suite with files under root (a directory path or URL that does not exist yet or
// is empty).
func Run(t *testing.T, root string) {
	ctx := context.Background()
	t.Run("CommitMakesFileVisible", func(t *testing.T) {
		p := storage.Join(root, "a", "part-0.bin")
		w, err := storage.Create(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		if storage.Exists(ctx, p) {
			t.Fatalf("%s visible before Commit", p)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		got, err := storage.ReadFile(ctx, p)
		if err != nil || string(got) != "hello" {
			t.Fatalf("ReadFile = %q, %v; want hello", got, err)
		}
		if n, err := storage.Size(ctx, p); err != nil || n != 5 {
			t.Fatalf("Size = %d, %v; want 5", n, err)
		}
		if err := w.Commit(); err == nil {
			t.Fatal("second Commit succeeded")
		}
	})
	t.Run("AbortLeavesNothingUnderFinalName", func(t *testing.T) {
		p := storage.Join(root, "b", "part-0.bin")
		w, err := storage.Create(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("partial"))
		w.Abort()
		if storage.Exists(ctx, p) {
			t.Fatalf("%s exists after Abort", p)
		}
		files, _ := storage.List(ctx, storage.Join(root, "b", "*"))
		for _, f := range files {
			if !strings.HasPrefix(storage.Base(f), ".") {
				t.Fatalf("visible file %s left after Abort", f)
			}
		}
	})
	t.Run("OverwriteReplaces", func(t *testing.T) {
		p := storage.Join(root, "c", "x.json")
		for _, s := range []string{"first version", "second"} {
			if err := storage.WriteFile(ctx, p, []byte(s)); err != nil {
				t.Fatal(err)
			}
		}
		got, _ := storage.ReadFile(ctx, p)
		if string(got) != "second" {
			t.Fatalf("after overwrite got %q", got)
		}
	})
	t.Run("ListAndRemove", func(t *testing.T) {
		for _, n := range []string{"1.txt", "2.txt", "3.dat"} {
			if err := storage.WriteFile(ctx, storage.Join(root, "d", n), []byte(n)); err != nil {
				t.Fatal(err)
			}
		}
		got, err := storage.List(ctx, storage.Join(root, "d", "*.txt"))
		if err != nil || len(got) != 2 {
			t.Fatalf("List *.txt = %v, %v; want 2 files", got, err)
		}
		if err := storage.Remove(ctx, got[0]); err != nil {
			t.Fatal(err)
		}
		if storage.Exists(ctx, got[0]) {
			t.Fatalf("%s exists after Remove", got[0])
		}
		if err := storage.Remove(ctx, got[0]); err != nil {
			t.Fatalf("removing a missing file: %v", err)
		}
	})
	t.Run("ReaderAt", func(t *testing.T) {
		p := storage.Join(root, "e", "blob")
		data := bytes.Repeat([]byte("0123456789"), 1000)
		if err := storage.WriteFile(ctx, p, data); err != nil {
			t.Fatal(err)
		}
		r, size, err := storage.OpenReaderAt(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if size != int64(len(data)) {
			t.Fatalf("size %d, want %d", size, len(data))
		}
		for _, off := range []int64{10, 5000, 3, 9990} { // forwards, then backwards
			b := make([]byte, 10)
			if _, err := r.ReadAt(b, off); err != nil && err != io.EOF {
				t.Fatalf("ReadAt(%d): %v", off, err)
			}
			if !bytes.Equal(b, data[off:off+10]) {
				t.Fatalf("ReadAt(%d) = %q", off, b)
			}
		}
	})
	t.Run("MissingFile", func(t *testing.T) {
		if _, err := storage.ReadFile(ctx, storage.Join(root, "nope")); err == nil || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("reading a missing file: err = %v, want an error naming it", err)
		}
	})
}
