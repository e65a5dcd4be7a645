package gcs_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/lemon-curation/lemon/storage"
	"github.com/lemon-curation/lemon/storage/storagetest"
)

// emulator starts an in-process fake GCS server with bucket "lemon-test" and points the
// client at it through a proxy that counts the bytes the server sends back.
func emulator(t *testing.T) *atomic.Int64 {
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Port: 0, PublicHost: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "lemon-test"})
	target, _ := url.Parse(srv.URL())
	var sent atomic.Int64
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(r *http.Response) error {
		r.Body = countingBody{r.Body, &sent}
		return nil
	}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)
	t.Setenv("STORAGE_EMULATOR_HOST", front.Listener.Addr().String())
	return &sent
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingBody) Read(b []byte) (int, error) {
	n, err := c.ReadCloser.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// TestConformance runs the suite on gs:// paths against the emulator (the cloud client honours
// STORAGE_EMULATOR_HOST), so the gs:// code path runs without a cloud account.
func TestConformance(t *testing.T) {
	emulator(t)
	storagetest.Run(t, "gs://lemon-test/conformance")
}

// TestReadsAreRanged: reading a footer and a header of a large object transfers those bytes,
// not the object.
func TestReadsAreRanged(t *testing.T) {
	sent := emulator(t)
	ctx := t.Context()
	const size = 8 << 20
	p := "gs://lemon-test/big"
	if err := storage.WriteFile(ctx, p, make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	sent.Store(0)
	r, n, err := storage.OpenReaderAt(ctx, p)
	if err != nil || n != size {
		t.Fatalf("OpenReaderAt: %d, %v", n, err)
	}
	defer r.Close()
	for _, off := range []int64{size - 8, size - 4096, 0, 4 << 20} {
		if _, err := r.ReadAt(make([]byte, min(64, size-off)), off); err != nil {
			t.Fatalf("ReadAt(%d): %v", off, err)
		}
	}
	// A read after a jump fetches a small window, never the remainder of the object.
	if got := sent.Load(); got > 512<<10 {
		t.Fatalf("4 small reads of an 8 MiB object transferred %d bytes", got)
	}
	// Reading on in order streams: the whole object arrives once, in a few requests.
	sent.Store(0)
	buf := make([]byte, 32<<10)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := r.ReadAt(buf, off); err != nil {
			t.Fatalf("ReadAt(%d): %v", off, err)
		}
	}
	if got := sent.Load(); got < size || got > size+512<<10 {
		t.Fatalf("a scan of an 8 MiB object transferred %d bytes", got)
	}
}
