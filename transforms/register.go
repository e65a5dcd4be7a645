package transforms

import (
	"reflect"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"
	"github.com/apache/beam/sdks/v2/go/pkg/beam/register"

	"github.com/lemon-curation/lemon/score"
)

// Every DoFn, function and element type the graph uses is registered here, so workers on any
// runner can find them by name.
func init() {
	for _, t := range []any{
		(*readShardFn)(nil), (*splitDuplicatesFn)(nil), (*keyByBlockFn)(nil), (*writeBlockFn)(nil),
		(*makeTasksFn)(nil), (*searchFn)(nil), (*mergeFn)(nil), (*scoreFn)(nil), (*countFn)(nil),
		(*startSelectionFn)(nil), (*histogramFn)(nil), (*writeShardFn)(nil), (*sumCountsFn)(nil),
		(*writeManifestFn)(nil), (*sampleKeyFn)(nil), (*keySampledFn)(nil),
		(*Row)(nil), (*Fault)(nil), (*Partial)(nil), (*Scored)(nil), (*Outcome)(nil), (*BlockRef)(nil),
		(*Task)(nil), (*Counts)(nil), (*IDSeen)(nil), (*SampleKey)(nil), (*score.Selection)(nil),
	} {
		beam.RegisterType(reflect.TypeOf(t).Elem())
	}
	register.Function1x2(idSeen)
	register.Function3x0(keepDuplicated)
	register.Function2x1(firstSeenFn)
	register.Function1x2(rowByID)
	register.Function1x2(posByID)
	register.Function1x1(selfIsPos)
	register.Function4x0(markSelfFn)
	register.Function1x1(scoreKey)
	register.Function3x0(digitOf)
	register.Function2x1(nextSelection)
	register.Function1x1(selectionThreshold)
	register.Function1x2(scoredOutcome)
	register.Function1x2(faultOutcome)
	register.Function1x2(shardMarker)
	register.Function2x1(sampleLess)
	register.Emitter1[Row]()
	register.Emitter1[Fault]()
	register.Emitter2[string, IDSeen]()
	register.Emitter2[int64, Row]()
	register.Emitter2[int64, Partial]()
	register.Emitter1[Task]()
	register.Emitter1[int]()
	register.Iter1[BlockRef]()
	register.Iter1[Row]()
	register.Iter1[int64]()
	register.Iter1[Outcome]()
	register.Iter2[string, IDSeen]()
}
