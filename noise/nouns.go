package noise

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode"

	"github.com/lemon-curation/lemon/storage"
)

// Lexicon finds the nouns of a caption. lemon has no part-of-speech tagger, so a word counts as
// a noun when WordNet lists it (or its singular) as a noun lemma and it is not on the Stopwords
// list. That over-counts words that are nouns only in some senses ("sitting", "white", "two"),
// which is what Stopwords is for.
//
// The authors (notebooks/preprocess_mscoco.ipynb) tag each caption with spaCy's
// en_core_web_trf and keep the lower-cased text of every token tagged NOUN, unlemmatised and
// with repeats. How that differs, and what it should do to the noise:
//   - spaCy reads context: "surfing" in "a man surfing" is a verb to it, a noun lemma to
//     WordNet; gerunds and adjectives not on Stopwords become extra nouns here. A drawn extra
//     noun is usually an activity or attribute rather than an object, so its donors are less
//     related: slightly easier noise.
//   - Stopwords drop generic nouns spaCy keeps ("photo", "picture", "group", "side", "top").
//     Drawing one of those at the authors' gives a nearly random donor; here it cannot be
//     drawn: slightly harder noise on captions that have one.
//   - WordNet lemmatises ("dogs" and "dog" are one term) where the authors' terms are surface
//     forms, so a term's donors here include its plural's rows: more donors, equally related.
//   - Multi-word lemmas ("hot_dog", "fire_hydrant") are extra terms beside their words; spaCy
//     has none (its terms would be "dog" and "hydrant").
//   - The authors' lists repeat a noun said twice, weighting it double in the draw; here each
//     distinct noun is drawn equally.
//
// The term-first rule matters far more than any of these (see sharedPicker); no spaCy output
// was available to measure the rest, so their net effect is stated, not measured.
type Lexicon struct {
	nouns    map[string]bool
	exc      map[string]string // WordNet noun.exc: irregular plural -> singular
	maxWords int               // longest multi-word lemma kept, in words
	stop     map[string]bool
}

// maxLemmaWords bounds the multi-word lemmas matched ("teddy_bear", "fire_hydrant"): longer
// ones are rare in captions and each extra length costs a lookup per word.
const maxLemmaWords = 3

// Stopwords are words WordNet lists as nouns that, in captions, are almost always something
// else (articles, prepositions, numbers, colours, common verbs and adjectives) or are nouns
// too generic to make two captions semantically close ("photo", "group", "side"). A caption
// word on this list, or whose noun lemma is on it, is not a noun for --kind noun.
var Stopwords = strings.Fields(`
	a an the this that these those it its he she his her they them their there here i me my
	we us our you your one ones some any all each other others another both few many much
	more most several no not and or but of in on at to from by with without into onto over
	under near next behind above below beside between through across around along up down
	out off about as for while who which what is are was were be been being has have had do
	does can will may might must very just also so then than
	two three four five six seven eight nine ten eleven twelve dozen hundred first second
	third half single double
	white black red blue green yellow brown gray grey pink purple silver gold tan
	large small big little old young good close open full top bottom front back side middle
	center centre left right way lot lots couple group pair bunch kind type sort something
	someone somebody thing things view photo photograph picture image shot background
	foreground area part piece
	sitting standing holding walking riding looking playing laying lying eating flying wearing
	talking waiting running watching using getting taking making going doing trying posing
	smiling covered filled made parked sits stands holds walks rides looks plays lays eats
	flies wears waits runs watches uses swinging sleeping jumping cutting driving throwing
	catching hitting carrying pulling crossing grazing resting leaning hanging`)

// NewLexicon builds a lexicon from noun lemmas (lower case, "_" between words, as WordNet's
// index.noun writes them) and irregular plurals (plural -> singular, as noun.exc).
func NewLexicon(nouns []string, exceptions map[string]string) *Lexicon {
	l := &Lexicon{nouns: map[string]bool{}, exc: map[string]string{}, maxWords: 1, stop: map[string]bool{}}
	for _, n := range nouns {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" {
			continue
		}
		w := strings.Count(n, "_") + 1
		if w > maxLemmaWords {
			continue
		}
		l.nouns[n] = true
		l.maxWords = max(l.maxWords, w)
	}
	for k, v := range exceptions {
		l.exc[strings.ToLower(k)] = strings.ToLower(v)
	}
	for _, s := range Stopwords {
		l.stop[s] = true
	}
	return l
}

// Len is the number of noun lemmas.
func (l *Lexicon) Len() int { return len(l.nouns) }

// LoadWordNet reads index.noun and (if present) noun.exc from a WordNet dict directory.
func LoadWordNet(ctx context.Context, dir string) (*Lexicon, error) {
	idx := storage.Join(dir, "index.noun")
	b, err := storage.ReadFile(ctx, idx)
	if err != nil {
		return nil, fmt.Errorf("reading WordNet noun index: %w (run scripts/fetch-wordnet.sh, or pass --wordnet DIR)", err)
	}
	var nouns []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// The licence header's lines start with spaces; entries start with the lemma.
		if line == "" || line[0] == ' ' {
			continue
		}
		if i := strings.IndexByte(line, ' '); i > 0 {
			nouns = append(nouns, line[:i])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", idx, err)
	}
	if len(nouns) == 0 {
		return nil, fmt.Errorf("%s: no noun lemmas (not a WordNet index.noun?)", idx)
	}
	exc := map[string]string{}
	excPath := storage.Join(dir, "noun.exc")
	if storage.Exists(ctx, excPath) {
		b, err := storage.ReadFile(ctx, excPath)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				exc[f[0]] = f[1]
			}
		}
	}
	return NewLexicon(nouns, exc), nil
}

// WordNetDirs are where FindWordNet looks, after $WNSEARCHDIR: the Debian package's place and
// the place scripts/fetch-wordnet.sh unpacks to without root (relative to the working
// directory and to the directory above the executable's, as in bin/lemon).
func WordNetDirs() []string {
	dirs := []string{}
	if d := os.Getenv("WNSEARCHDIR"); d != "" {
		dirs = append(dirs, d)
	}
	dirs = append(dirs, "/usr/share/wordnet", "/usr/local/share/wordnet")
	rel := filepath.Join("third_party", "wordnet", "usr", "share", "wordnet")
	if wd, err := os.Getwd(); err == nil {
		// Walk up so tests (run in a package directory) find the repository's copy.
		for d := wd; ; d = filepath.Dir(d) {
			dirs = append(dirs, filepath.Join(d, rel))
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Join(filepath.Dir(filepath.Dir(exe)), rel))
	}
	return dirs
}

// FindWordNet returns the first of WordNetDirs that holds index.noun.
func FindWordNet() (string, error) {
	dirs := WordNetDirs()
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, "index.noun")); err == nil && st.Size() > 0 {
			return d, nil
		}
	}
	return "", fmt.Errorf("no WordNet noun index found (looked for index.noun in %s): run scripts/fetch-wordnet.sh (it installs Debian's wordnet-base) or pass --wordnet DIR", strings.Join(dirs, ", "))
}

// Words splits a caption into lower-case words: runs of letters (so "man's" is "man", "s").
func Words(caption string) []string {
	return strings.FieldsFunc(strings.ToLower(caption), func(r rune) bool { return !unicode.IsLetter(r) })
}

// suffixRules are WordNet's morphy rules for nouns, in its order: inflected ending -> base.
var suffixRules = [][2]string{{"s", ""}, {"ses", "s"}, {"xes", "x"}, {"zes", "z"}, {"ches", "ch"}, {"shes", "sh"}, {"men", "man"}, {"ies", "y"}}

// Lemma returns the noun lemma of one word or "_"-joined phrase, the way WordNet's morphy does
// for nouns: an irregular plural from noun.exc, else the word itself if it is a lemma (so
// "glasses" stays "glasses"), else the first suffix rule that gives a lemma ("dogs" -> "dog",
// "buses" -> "bus", "skies" -> "sky"). For a phrase only the last word is inflected.
func (l *Lexicon) Lemma(w string) (string, bool) {
	if b, ok := l.exc[w]; ok && l.nouns[b] {
		return b, true
	}
	if l.nouns[w] {
		return w, true
	}
	for _, r := range suffixRules {
		if len(w) > len(r[0]) && strings.HasSuffix(w, r[0]) {
			if b := w[:len(w)-len(r[0])] + r[1]; l.nouns[b] {
				return b, true
			}
		}
	}
	if i := strings.LastIndexByte(w, '_'); i > 0 {
		if b, ok := l.exc[w[i+1:]]; ok && l.nouns[w[:i+1]+b] {
			return w[:i+1] + b, true
		}
	}
	return "", false
}

// Nouns returns the sorted, distinct noun lemmas of a caption: single words and the
// multi-word lemmas WordNet has ("hot dogs" gives "hot_dog" and "dog"), but no phrase that
// starts or ends with a stopword.
func (l *Lexicon) Nouns(caption string) []string {
	words := Words(caption)
	set := map[string]bool{}
	for i := range words {
		for n := 1; n <= l.maxWords && i+n <= len(words); n++ {
			// A phrase that starts or ends with a stopword is not a noun here: WordNet's
			// "the_city" or "black_and_white" would otherwise join captions on "the" or "black".
			if l.stop[words[i]] || l.stop[words[i+n-1]] {
				continue
			}
			phrase := strings.Join(words[i:i+n], "_")
			if lem, ok := l.Lemma(phrase); ok && !l.stop[lem] {
				set[lem] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
