// Package storagetest is the conformance suite every storage backend passes: atomic commit and
// abort, listing, sizes, streaming and random-access reads, removal, and errors that name the
// file. Each backend's tests call Run with a root on that backend.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
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
		if files, _ := storage.List(ctx, storage.Join(root, "a", "*")); !slices.Equal(files, []string{p}) {
			t.Fatalf("after Commit the directory holds %v, want only %s (no temporary file left)", files, p)
		}
	})
	t.Run("CreateExclusive", func(t *testing.T) {
		p := storage.Join(root, "lock", ".run.lock")
		// Several at once: exactly one wins, the others see fs.ErrExist.
		const n = 8
		errs := make(chan error, n)
		for i := range n {
			go func() { errs <- storage.CreateExclusive(ctx, p, []byte(fmt.Sprint("owner ", i))) }()
		}
		won := 0
		for range n {
			switch err := <-errs; {
			case err == nil:
				won++
			case !errors.Is(err, fs.ErrExist):
				t.Fatalf("CreateExclusive of a taken name: %v, want an error wrapping fs.ErrExist", err)
			}
		}
		got, err := storage.ReadFile(ctx, p)
		if won != 1 || err != nil || !strings.HasPrefix(string(got), "owner ") {
			t.Fatalf("%d of %d CreateExclusive calls won (want 1); the file holds %q (%v)", won, n, got, err)
		}
		if err := storage.Remove(ctx, p); err != nil {
			t.Fatal(err)
		}
		if err := storage.CreateExclusive(ctx, p, []byte("again")); err != nil {
			t.Fatalf("CreateExclusive after removal: %v", err)
		}
	})
	t.Run("AbortLeavesNothing", func(t *testing.T) {
		p := storage.Join(root, "b", "part-0.bin")
		w, err := storage.Create(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("partial"))
		w.Abort()
		w.Abort() // twice is harmless
		if storage.Exists(ctx, p) {
			t.Fatalf("%s exists after Abort", p)
		}
		if files, _ := storage.List(ctx, storage.Join(root, "b", "*")); len(files) != 0 {
			t.Fatalf("files left after Abort: %v", files)
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
		for _, n := range []string{"1.txt", "2.txt", "3.dat", "sub/4.txt", ".hidden.txt"} {
			if err := storage.WriteFile(ctx, storage.Join(root, "d", n), []byte(n)); err != nil {
				t.Fatal(err)
			}
		}
		got, err := storage.List(ctx, storage.Join(root, "d", "*.txt"))
		want := []string{storage.Join(root, "d", ".hidden.txt"), storage.Join(root, "d", "1.txt"), storage.Join(root, "d", "2.txt")}
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("List *.txt = %v, %v; want %v (sorted, no subdirectory)", got, err, want)
		}
		if all, _ := storage.List(ctx, storage.Join(root, "d", "*")); len(all) != 4 {
			t.Fatalf("List * = %v, want the 4 files (not the subdirectory)", all)
		}
		if err := storage.Remove(ctx, got[1]); err != nil {
			t.Fatal(err)
		}
		if storage.Exists(ctx, got[1]) {
			t.Fatalf("%s exists after Remove", got[1])
		}
		if err := storage.Remove(ctx, got[1]); err != nil {
			t.Fatalf("removing a missing file: %v", err)
		}
		if none, err := storage.List(ctx, storage.Join(root, "no-such-dir", "*")); err != nil || len(none) != 0 {
			t.Fatalf("listing a missing directory = %v, %v; want nothing", none, err)
		}
		if _, err := storage.List(ctx, storage.Join(root, "*", "x")); err == nil {
			t.Fatal("a wildcard before the last element was accepted")
		}
	})
	t.Run("Walk", func(t *testing.T) {
		dir := storage.Join(root, "w")
		for _, n := range []string{"b.txt", "a/1.txt", "a/deep/er/2.txt", ".hidden/3.txt", "a/.tmp-4", "c/5.txt"} {
			if err := storage.WriteFile(ctx, storage.Join(dir, n), []byte(n)); err != nil {
				t.Fatal(err)
			}
		}
		got, err := storage.Walk(ctx, dir)
		var want []string
		for _, n := range []string{"a/1.txt", "a/deep/er/2.txt", "b.txt", "c/5.txt"} {
			want = append(want, storage.Join(dir, n))
		}
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("Walk = %v, %v; want %v (every file at any depth, sorted, no hidden names)", got, err, want)
		}
		if none, err := storage.Walk(ctx, storage.Join(root, "no-such-dir")); err != nil || len(none) != 0 {
			t.Fatalf("walking a missing directory = %v, %v; want nothing", none, err)
		}
		if !storage.IsDir(ctx, dir) || !storage.IsDir(ctx, storage.Join(dir, "a", "deep")) {
			t.Fatal("IsDir of directories holding files = false")
		}
		if storage.IsDir(ctx, storage.Join(dir, "b.txt")) || storage.IsDir(ctx, storage.Join(root, "no-such-dir")) {
			t.Fatal("IsDir of a file or a missing directory = true")
		}
	})
	t.Run("RemoveAll", func(t *testing.T) {
		dir := storage.Join(root, "f")
		for _, n := range []string{"1", "x/2", "x/y/3"} {
			if err := storage.WriteFile(ctx, storage.Join(dir, n), []byte(n)); err != nil {
				t.Fatal(err)
			}
		}
		keep := storage.Join(root, "f-sibling")
		if err := storage.WriteFile(ctx, keep, []byte("keep")); err != nil {
			t.Fatal(err)
		}
		if err := storage.RemoveAll(ctx, dir); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"1", "x/2", "x/y/3"} {
			if storage.Exists(ctx, storage.Join(dir, n)) {
				t.Fatalf("%s left after RemoveAll", n)
			}
		}
		if !storage.Exists(ctx, keep) {
			t.Fatalf("RemoveAll(%s) removed its sibling %s", dir, keep)
		}
		if err := storage.RemoveAll(ctx, dir); err != nil {
			t.Fatalf("RemoveAll of a missing directory: %v", err)
		}
	})
	t.Run("ReaderAt", func(t *testing.T) {
		p := storage.Join(root, "e", "blob")
		data := make([]byte, 1<<20)
		for i := range data {
			data[i] = byte(i * 7 / 3)
		}
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
		// Forwards in order, a short skip, a long skip, backwards, the footer, then past the end.
		for _, off := range []int64{0, 10, 20, 5000, 900000, 3, size - 8, 1000} {
			b := make([]byte, 10)
			n, err := r.ReadAt(b, off)
			want := data[off:min(off+10, size)]
			if n != len(want) || !bytes.Equal(b[:n], want) {
				t.Fatalf("ReadAt(%d) = %d bytes %q, want %q", off, n, b[:n], want)
			}
			if n < 10 && err != io.EOF {
				t.Fatalf("short ReadAt(%d) err = %v, want io.EOF", off, err)
			}
			if n == 10 && err != nil && err != io.EOF {
				t.Fatalf("ReadAt(%d): %v", off, err)
			}
		}
		if n, err := r.ReadAt(make([]byte, 4), size); n != 0 || err != io.EOF {
			t.Fatalf("ReadAt(size) = %d, %v; want 0, io.EOF", n, err)
		}
		rc, err := storage.Open(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(all, data) {
			t.Fatalf("Open then read: %d bytes, %v", len(all), err)
		}
	})
	t.Run("MissingFile", func(t *testing.T) {
		p := storage.Join(root, "nope")
		if _, err := storage.ReadFile(ctx, p); err == nil || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("reading a missing file: err = %v, want an error naming it", err)
		}
		if _, _, err := storage.OpenReaderAt(ctx, p); err == nil || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("opening a missing file: err = %v, want an error naming it", err)
		}
		if storage.Exists(ctx, p) {
			t.Fatal("a missing file exists")
		}
		if storage.Exists(ctx, storage.Join(root, "d")) {
			t.Fatal("Exists is true for a directory; it is for files")
		}
	})
}
