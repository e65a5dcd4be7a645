package pipeline

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/apache/beam/sdks/v2/go/pkg/beam"

	"github.com/lemon-curation/lemon/dataset"
	"github.com/lemon-curation/lemon/embed"
	"github.com/lemon-curation/lemon/rundir"
	"github.com/lemon-curation/lemon/transforms"
)

// EmbedConfig is one `lemon embed` job: raw images and captions in, clip-retrieval embeddings
// out, ready for `lemon score` (or any other tool that reads that layout).
type EmbedConfig struct {
	Input       string
	InputFormat string
	Columns     dataset.Options
	Output      string
	Embed       embed.Config
	Dtype       string // "<f4" (default) or "<f2"
}

// EmbedPlan is a checked embed job.
type EmbedPlan struct {
	Config    EmbedConfig
	Input     transforms.Input
	Rows      int64
	RunID     string    // this run's id (rundir.NewRunID)
	StartedAt time.Time // when the run was planned
}

// CheckEmbed validates an embed job: the input must be a raw format, and the encoders must load.
func CheckEmbed(ctx context.Context, c EmbedConfig) (*EmbedPlan, error) {
	if c.Input == "" || c.Output == "" {
		return nil, fmt.Errorf("give --input and --output")
	}
	if c.Dtype == "" {
		c.Dtype = "<f4"
	}
	if c.Dtype != "<f4" && c.Dtype != "<f2" {
		return nil, fmt.Errorf("--dtype must be float32 or float16")
	}
	if !c.Embed.Enabled() {
		return nil, fmt.Errorf("give --image-model and --text-model")
	}
	in, rows, err := planInput(ctx, c.Input, c.InputFormat, c.Columns, c.Embed)
	if err != nil {
		return nil, err
	}
	if !in.Raw {
		return nil, fmt.Errorf("%s already holds embeddings (%s format); score it with lemon score", c.Input, in.Format)
	}
	return &EmbedPlan{Config: c, Input: in, Rows: rows, RunID: rundir.NewRunID(), StartedAt: time.Now().UTC()}, nil
}

// Manifest is the run's manifest as it starts (status Running): what the launcher writes
// before the job runs, and what the job's last stage completes with the counts.
func (p *EmbedPlan) Manifest(command []string) transforms.EmbedManifest {
	c := p.Config
	return transforms.EmbedManifest{
		Header: rundir.Header{Tool: "lemon embed", Version: rundir.Version, Status: rundir.Running, RunID: p.RunID, Command: command,
			Input: c.Input, Format: p.Input.Format, Shards: len(p.Input.Shards), Dim: p.Input.Shards[0].Dim, StartedAt: p.StartedAt},
		Embed: c.Embed, Dtype: c.Dtype, Versions: map[string]string{"lemon": rundir.Version, "go": runtime.Version()},
	}
}

// BuildEmbed adds the embed job to the pipeline; m is the run's manifest (Manifest).
func BuildEmbed(s beam.Scope, p *EmbedPlan, m transforms.EmbedManifest) {
	c := p.Config
	counts := transforms.WriteEmbeddings(s, p.Input, c.Embed, transforms.EmbedOutput{Dir: c.Output, Dtype: c.Dtype})
	transforms.WriteEmbedManifest(s, m, c.Output, counts)
}
