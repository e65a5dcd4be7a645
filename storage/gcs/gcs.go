// Package gcs is storage's backend for Google Cloud Storage (gs://bucket/object), on the cloud
// client directly: reads are ranged requests (a Parquet footer, an npy header or a tar member
// costs its own bytes, not a stream of the whole object), and since GCS has no rename, a move
// is a server-side copy and a delete. STORAGE_EMULATOR_HOST points it at an emulator
// (fake-gcs-server) instead of Google's servers.
package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"

	"github.com/lemon-curation/lemon/storage/driver"
)

// Driver reads and writes gs:// objects. Its zero value is ready; clients are made on first use.
type Driver struct {
	mu      sync.Mutex
	clients map[string]*storage.Client // by STORAGE_EMULATOR_HOST, so tests can switch emulators
}

var _ driver.Driver = (*Driver)(nil)

func (d *Driver) client() (*storage.Client, error) {
	host := os.Getenv("STORAGE_EMULATOR_HOST")
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.clients[host]; c != nil {
		return c, nil
	}
	c, err := storage.NewClient(context.Background())
	if err != nil {
		return nil, fmt.Errorf("connecting to Google Cloud Storage (gs:// needs application default credentials, e.g. `gcloud auth application-default login`, or STORAGE_EMULATOR_HOST for an emulator): %w", err)
	}
	if d.clients == nil {
		d.clients = map[string]*storage.Client{}
	}
	d.clients[host] = c
	return c, nil
}

// split parses gs://bucket/object.
func split(p string) (bucket, object string, err error) {
	rest, ok := strings.CutPrefix(p, "gs://")
	if !ok {
		return "", "", fmt.Errorf("%s: not a gs:// path", p)
	}
	bucket, object, _ = strings.Cut(rest, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("%s: no bucket name", p)
	}
	return bucket, object, nil
}

// handle is the object p, with retries on every call: lemon's writes go to unique temporary
// names and its copies and deletes are repeatable, so retrying them is safe.
func (d *Driver) handle(p string) (*storage.ObjectHandle, error) {
	c, err := d.client()
	if err != nil {
		return nil, err
	}
	b, o, err := split(p)
	if err != nil {
		return nil, err
	}
	if o == "" {
		return nil, fmt.Errorf("%s: names a bucket, not an object", p)
	}
	return c.Bucket(b).Object(o).Retryer(storage.WithPolicy(storage.RetryAlways)), nil
}

// wrap turns the client's "not found" into fs.ErrNotExist and names the path.
func wrap(p string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, storage.ErrObjectNotExist) || errors.Is(err, storage.ErrBucketNotExist) {
		return fmt.Errorf("%s: %w (%v)", p, fs.ErrNotExist, err)
	}
	return fmt.Errorf("%s: %w", p, err)
}

func (d *Driver) NewRangeReader(ctx context.Context, p string, offset, length int64) (io.ReadCloser, error) {
	h, err := d.handle(p)
	if err != nil {
		return nil, err
	}
	r, err := h.NewRangeReader(ctx, offset, length)
	return r, wrap(p, err)
}

func (d *Driver) Size(ctx context.Context, p string) (int64, error) {
	h, err := d.handle(p)
	if err != nil {
		return 0, err
	}
	a, err := h.Attrs(ctx)
	if err != nil {
		return 0, wrap(p, err)
	}
	return a.Size, nil
}

// writer reports the path in its errors.
type writer struct {
	*storage.Writer
	p string
}

func (w writer) Write(b []byte) (int, error) {
	n, err := w.Writer.Write(b)
	return n, wrap(w.p, err)
}
func (w writer) Close() error { return wrap(w.p, w.Writer.Close()) }

func (d *Driver) NewWriter(ctx context.Context, p string) (io.WriteCloser, error) {
	h, err := d.handle(p)
	if err != nil {
		return nil, err
	}
	return writer{h.NewWriter(ctx), p}, nil
}

// CreateExclusive uploads with the precondition that no object of that name exists, which the
// server checks atomically (HTTP 412 when it does).
func (d *Driver) CreateExclusive(ctx context.Context, p string, data []byte) error {
	h, err := d.handle(p)
	if err != nil {
		return err
	}
	w := h.If(storage.Conditions{DoesNotExist: true}).NewWriter(ctx)
	if _, err := w.Write(data); err != nil {
		w.Close()
		return wrapExist(p, err)
	}
	return wrapExist(p, w.Close())
}

// wrapExist is wrap, with a failed DoesNotExist precondition reported as fs.ErrExist.
func wrapExist(p string, err error) error {
	var e *googleapi.Error
	if errors.As(err, &e) && e.Code == http.StatusPreconditionFailed {
		return fmt.Errorf("%s: %w", p, fs.ErrExist)
	}
	return wrap(p, err)
}

func (d *Driver) Move(ctx context.Context, src, dst string) error {
	s, err := d.handle(src)
	if err != nil {
		return err
	}
	t, err := d.handle(dst)
	if err != nil {
		return err
	}
	if _, err := t.CopierFrom(s).Run(ctx); err != nil {
		return wrap(src, err)
	}
	if err := s.Delete(ctx); err != nil && !errors.Is(err, storage.ErrObjectNotExist) {
		return wrap(src, err)
	}
	return nil
}

func (d *Driver) Delete(ctx context.Context, p string) error {
	h, err := d.handle(p)
	if err != nil {
		return err
	}
	return wrap(p, h.Delete(ctx))
}

func (d *Driver) List(ctx context.Context, dir string) ([]driver.Entry, error) {
	c, err := d.client()
	if err != nil {
		return nil, err
	}
	b, prefix, err := split(dir)
	if err != nil {
		return nil, err
	}
	if prefix = strings.TrimSuffix(prefix, "/"); prefix != "" {
		prefix += "/"
	}
	q := &storage.Query{Prefix: prefix, Delimiter: "/"}
	if err := q.SetAttrSelection([]string{"Name"}); err != nil {
		return nil, err
	}
	var out []driver.Entry
	it := c.Bucket(b).Objects(ctx, q)
	for {
		a, err := it.Next()
		if err == iterator.Done {
			break
		}
		if err != nil {
			return nil, wrap(dir, err)
		}
		if a.Prefix != "" {
			out = append(out, driver.Entry{Path: "gs://" + b + "/" + strings.TrimSuffix(a.Prefix, "/"), Dir: true})
		} else if a.Name != prefix { // a "directory placeholder" object is not a file in it
			out = append(out, driver.Entry{Path: "gs://" + b + "/" + a.Name})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}
