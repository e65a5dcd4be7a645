package storage_test

import (
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/lemon-curation/lemon/storage/storagetest"
)

// TestGCS runs the conformance suite on gs:// paths against an in-process fake GCS server (the
// cloud client honours STORAGE_EMULATOR_HOST), so the gs:// code path is exercised without a
// cloud account.
func TestGCS(t *testing.T) {
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Port: 0, PublicHost: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "lemon-test"})
	t.Setenv("STORAGE_EMULATOR_HOST", srv.URL()[len("http://"):])
	storagetest.Run(t, "gs://lemon-test/conformance")
}
