package metadata

import (
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// parseTruth reads a truth value: true/false, 1/0, yes/no, in any case.
func parseTruth(s string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "1", "yes":
		return true, true
	case "false", "0", "no":
		return false, true
	}
	return false, false
}

// TruthColumn reads a ground-truth column of rec (bool, or strings true/false, 1/0, yes/no in
// any case); offset is the row number of rec's first row in file, for error messages.
func TruthColumn(file string, rec arrow.RecordBatch, name string, offset int) ([]bool, error) {
	col := rec.Column(rec.Schema().FieldIndices(name)[0])
	out := make([]bool, col.Len())
	if b, ok := col.(*array.Boolean); ok {
		for i := range out {
			if b.IsNull(i) {
				return nil, fmt.Errorf("%s row %d (0-based): truth column %q is null", file, offset+i, name)
			}
			out[i] = b.Value(i)
		}
		return out, nil
	}
	s, valid, err := StringColumn(file, rec, name)
	if err != nil {
		return nil, err
	}
	for i := range out {
		v, ok := parseTruth(s[i])
		if !valid[i] || !ok {
			shown := fmt.Sprintf("%q", s[i])
			if !valid[i] {
				shown = "null"
			}
			return nil, fmt.Errorf("%s row %d (0-based): truth column %q holds %s; want true/false, 1/0 or yes/no", file, offset+i, name, shown)
		}
		out[i] = v
	}
	return out, nil
}
