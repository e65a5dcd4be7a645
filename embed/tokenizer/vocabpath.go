package tokenizer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// VocabEnv names the environment variable that overrides DefaultVocabPath.
const VocabEnv = "LEMON_CLIP_VOCAB"

// vocabDir is where scripts/fetch-clip-vocab.sh puts the merges file,
// relative to the repository root.
var vocabDir = filepath.Join("third_party", "clip-vocab")

// vocabNames are the file names looked for in vocabDir, in order.
var vocabNames = []string{"bpe_simple_vocab_16e6.txt.gz", "bpe_simple_vocab_16e6.txt"}

// ErrVocabNotFound is returned (wrapped) by DefaultVocabPath when no
// vocabulary file is found.
var ErrVocabNotFound = errors.New("CLIP BPE vocabulary not found")

// DefaultVocabPath finds the vocab: $LEMON_CLIP_VOCAB if set (it must name
// an existing file), else third_party/clip-vocab/bpe_simple_vocab_16e6.txt.gz
// (or .txt) in the current directory or one of its parents (so in the
// repository from any package directory), or in the running binary's
// directory or one of its parents, or clip-vocab/ beside the binary.
func DefaultVocabPath() (string, error) {
	if p := os.Getenv(VocabEnv); p != "" {
		if st, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("tokenizer: $%s: %w", VocabEnv, err)
		} else if st.IsDir() {
			return "", fmt.Errorf("tokenizer: $%s=%s is a directory", VocabEnv, p)
		}
		return p, nil
	}
	var roots []string
	if wd, err := os.Getwd(); err == nil {
		roots = append(roots, wd)
	}
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		dir := filepath.Dir(exe)
		for _, name := range vocabNames {
			if p := filepath.Join(dir, "clip-vocab", name); isFile(p) {
				return p, nil
			}
		}
		roots = append(roots, dir)
	}
	for _, root := range roots {
		for dir := root; ; {
			for _, name := range vocabNames {
				if p := filepath.Join(dir, vocabDir, name); isFile(p) {
					return p, nil
				}
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", fmt.Errorf("tokenizer: %w: set $%s or run scripts/fetch-clip-vocab.sh (writes %s)",
		ErrVocabNotFound, VocabEnv, filepath.Join(vocabDir, vocabNames[0]))
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}
