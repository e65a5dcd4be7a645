package memfs_test

import (
	"testing"

	"github.com/lemon-curation/lemon/storage/storagetest"
)

func TestConformance(t *testing.T) { storagetest.Run(t, "memfs://conformance") }
