package embparquet_test

import (
	"testing"

	"github.com/lemon-curation/lemon/dataset/datasettest"
	"github.com/lemon-curation/lemon/dataset/embparquet"
)

func TestConformance(t *testing.T) {
	datasettest.Run(t, datasettest.Fixture{Format: embparquet.Format{}, Write: embparquet.Write, IDColumn: "id"}, t.TempDir())
}
