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
		(*readShardFn)(nil), (*duplicateFaultsFn)(nil), (*makeTasksFn)(nil), (*sideFilterFn)(nil),
		(*searchTaskFn)(nil), (*expandPairsFn)(nil), (*pairTaskFn)(nil), (*mergeTileFn)(nil),
		(*firstSelectionFn)(nil), (*histogramFn)(nil), (*writeShardFn)(nil),
		(*sumCountsFn)(nil), (*sumStatsFn)(nil), (*writeManifestFn)(nil),
		(*sampleCutoffFn)(nil), (*groupSampleFn)(nil), (*writeSampleFn)(nil),
		(*embedShardFn)(nil), (*writeEmbeddingsFn)(nil), (*writeEmbedManifestFn)(nil),
		(*Fault)(nil), (*Scored)(nil), (*BlockRef)(nil), (*Task)(nil), (*Counts)(nil),
		(*IDBatch)(nil), (*SampleKeys)(nil), (*sampleAccum)(nil), (*SampleCutoff)(nil), (*SampleGroup)(nil), (*PartialRef)(nil),
		(*SearchStats)(nil), (*PartialBlock)(nil), (*score.Selection)(nil), (*score.Histogram)(nil),
	} {
		beam.RegisterType(reflect.TypeOf(t).Elem())
	}
	beam.RegisterCoder(reflect.TypeOf(PartialBlock{}), encodePartialBlock, decodePartialBlock)
	beam.RegisterCoder(reflect.TypeOf(IDBatch{}), encodeIDBatch, decodeIDBatch)
	register.Function3x0(digitsOf)
	register.Function1x1(topDigits)
	register.Function2x1(nextSelection)
	register.Function1x1(selectionThreshold)
	register.Function1x2(faultOutcome)
	register.Function1x2(shardMarker)
	register.Emitter1[BlockRef]()
	register.Emitter1[Fault]()
	register.Emitter1[int64]()
	register.Emitter1[Task]()
	register.Emitter2[int32, []byte]()
	register.Emitter1[[]uint64]()
	register.Emitter1[Counts]()
	register.Emitter1[[]uint32]()
	register.Emitter1[SearchStats]()
	register.Emitter1[SampleKeys]()
	register.Emitter1[SampleGroup]()
	register.Emitter2[int64, PartialRef]()
	register.Emitter1[int]()
	register.Iter1[BlockRef]()
	register.Iter1[int64]()
	register.Iter1[IDBatch]()
	register.Iter1[score.Histogram]()
	register.Iter1[float64]()
	register.Emitter2[int32, IDBatch]()
	register.Iter1[[]byte]()
	register.Iter1[PartialRef]()
	register.Iter1[SampleCutoff]()
	register.Iter1[SearchStats]()
}
