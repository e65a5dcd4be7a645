package noise

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
)

// Kinds are the noise kinds, as --kind takes them.
var Kinds = []string{"random", "noun", "cat", "symmetric", "asymmetric"}

func classification(kind string) bool { return kind == "symmetric" || kind == "asymmetric" }

// corpus is what the noise decisions look at: one entry per dataset row, in global order
// (shards in plan order, rows in file order).
type corpus struct {
	captions []string
	ok       []bool     // false: a row with bad input, left alone and counted nowhere
	split    []string   // each row's split
	terms    [][]string // noun/cat: each row's nouns or categories
	labels   []string   // symmetric/asymmetric: each row's class
}

// decision is the noise: which rows change and what they take.
type decision struct {
	// donor[i] is the row whose caption (and text embedding) row i takes, or -1.
	donor []int
	// Classification: each row's new class index (-1 unchanged), the classes in order, and the
	// caption that stands for each class.
	newClass     []int
	classes      []string
	classCaption []string
	splits       []SplitReport
	warnings     []string
}

// target is floor(p*n), with a little slack so that 0.29*100 is 29, not 28.
func target(p float64, n int) int {
	return min(n, int(math.Floor(p*float64(n)+1e-9)))
}

// splitRNG is the random source for one split: seeded by --seed and the split's name, so each
// split's noise is independent of the others and of how the rows are sharded.
func splitRNG(seed uint64, split string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte("lemon-noise\x00" + split))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// makeSplit assigns n rows to train/val/test 80/10/10 at random: exactly floor(0.8n) train,
// floor(0.1n) val and the rest test.
func makeSplit(seed uint64, n int) []string {
	h := fnv.New64a()
	h.Write([]byte("lemon-noise-split"))
	rng := rand.New(rand.NewPCG(seed, h.Sum64()))
	out := make([]string, n)
	nTrain, nVal := n*8/10, n/10
	for k, i := range rng.Perm(n) {
		switch {
		case k < nTrain:
			out[i] = "train"
		case k < nTrain+nVal:
			out[i] = "val"
		default:
			out[i] = "test"
		}
	}
	return out
}

// splitOrder lists split names: train, validation and test first, then the rest sorted.
func splitOrder(names map[string]bool) []string {
	rank := map[string]int{"train": 0, "val": 1, "validation": 1, "valid": 1, "test": 2}
	var out []string
	for n := range names {
		out = append(out, n)
	}
	sort.Slice(out, func(a, b int) bool {
		ra, oka := rank[out[a]]
		rb, okb := rank[out[b]]
		if !oka {
			ra = 3
		}
		if !okb {
			rb = 3
		}
		if ra != rb {
			return ra < rb
		}
		return out[a] < out[b]
	})
	return out
}

// decide injects the noise. Within each split it walks the split's rows in a seeded random
// order and makes rows errors until floor(p*N_split) are, skipping (and counting) rows that
// have no partner to take a caption from; so the achieved level is exactly floor(p*N)/N unless
// too few rows have partners. Donors give their original caption, never one they received.
func decide(kind string, p float64, seed uint64, c *corpus) (*decision, error) {
	n := len(c.captions)
	d := &decision{donor: make([]int, n)}
	for i := range d.donor {
		d.donor[i] = -1
	}
	bySplit := map[string][]int{}
	names := map[string]bool{}
	for i := 0; i < n; i++ {
		if c.ok[i] {
			bySplit[c.split[i]] = append(bySplit[c.split[i]], i)
			names[c.split[i]] = true
		}
	}
	var cls *classInfo
	if classification(kind) {
		var err error
		if cls, err = classesOf(c); err != nil {
			return nil, err
		}
		d.newClass = make([]int, n)
		for i := range d.newClass {
			d.newClass[i] = -1
		}
		d.classes, d.classCaption = cls.names, cls.caption
		d.warnings = append(d.warnings, cls.warnings...)
	}
	for _, name := range splitOrder(names) {
		rows := bySplit[name]
		rng := splitRNG(seed, name)
		rep := SplitReport{Name: name, Rows: len(rows), Target: target(p, len(rows))}
		var pick func(a int) int
		switch kind {
		case "random":
			pick = randomPicker(rng, rows, c.captions)
		case "noun", "cat":
			pick = sharedPicker(rng, rows, c.captions, c.terms)
		case "symmetric", "asymmetric":
			pick = func(a int) int {
				i := rows[a]
				k, C := cls.index[i], len(cls.names)
				nk := (k + 1) % C
				if kind == "symmetric" {
					if nk = rng.IntN(C - 1); nk >= k {
						nk++
					}
				}
				d.newClass[i] = nk
				return cls.donor[nk]
			}
		default:
			return nil, fmt.Errorf("unknown noise kind %q (want one of %s)", kind, strings.Join(Kinds, ", "))
		}
		for _, a := range rng.Perm(len(rows)) {
			if rep.Errors == rep.Target {
				break
			}
			j := pick(a)
			if j < 0 {
				rep.Skipped++
				continue
			}
			d.donor[rows[a]] = j
			rep.Errors++
		}
		if rep.Rows > 0 {
			rep.Level = float64(rep.Errors) / float64(rep.Rows)
		}
		d.splits = append(d.splits, rep)
	}
	return d, nil
}

// randomPicker returns, for split position a, another row of the split with a different caption,
// uniformly at random, or -1 if every row of the split has row a's caption.
func randomPicker(rng *rand.Rand, rows []int, captions []string) func(a int) int {
	count := map[string]int{}
	for _, i := range rows {
		count[captions[i]]++
	}
	n := len(rows)
	return func(a int) int {
		ci := captions[rows[a]]
		if count[ci] == n {
			return -1
		}
		// Rejection sampling: uniform over the rows whose caption differs. Some row does, so
		// this ends; it takes (n-1)/(n-count) draws on average.
		for {
			b := rng.IntN(n - 1)
			if b >= a {
				b++
			}
			if captions[rows[b]] != ci {
				return rows[b]
			}
		}
	}
}

// sharedPicker is the authors' rule for noun and cat noise (calc_noise_by_integer_matching in
// their noise_captioning.py): for split position a, pick one of row a's terms uniformly at
// random, then a row of the split that has that term and a different caption, uniformly at
// random. It returns -1 when row a has no terms or the chosen term has no such row (the authors
// then leave the row unchanged; the caller skips it and walks on).
//
// Picking the term first matters: a row sharing a rare term with row a is as likely a donor as
// the rows sharing a common one, as a group, so donors are semantically closer (and the noise
// harder) than under "any row sharing any term", where the common term's many rows dominate.
// One difference from the authors: they draw the donor among all other rows with the term and
// count the swap as no error when the donor's caption happens to be the same; here the donor is
// drawn among rows with a different caption, so every swap is an error.
func sharedPicker(rng *rand.Rand, rows []int, captions []string, terms [][]string) func(a int) int {
	post := map[string][]int{} // term -> split positions of the rows that have it
	for b, i := range rows {
		for _, t := range terms[i] {
			post[t] = append(post[t], b)
		}
	}
	return func(a int) int {
		i := rows[a]
		ti := terms[i]
		if len(ti) == 0 {
			return -1
		}
		list := post[ti[rng.IntN(len(ti))]]
		eligible := func(b int) bool { return b != a && captions[rows[b]] != captions[i] }
		// Rejection sampling is uniform over the eligible rows of the list and cheap when most
		// are eligible (captions are nearly all distinct); a list of mostly self or same-caption
		// rows is enumerated instead.
		for try := 0; try < 32; try++ {
			if b := list[rng.IntN(len(list))]; eligible(b) {
				return rows[b]
			}
		}
		var cands []int
		for _, b := range list {
			if eligible(b) {
				cands = append(cands, b)
			}
		}
		if len(cands) == 0 {
			return -1
		}
		return rows[cands[rng.IntN(len(cands))]]
	}
}

// classInfo is the class structure of a classification dataset.
type classInfo struct {
	names    []string
	index    []int    // each row's class index (-1 for bad rows)
	caption  []string // the caption standing for each class
	donor    []int    // a row with that caption: its text embedding is the class prompt's
	warnings []string
}

// classesOf orders the classes (numerically when every label is an integer, else by name)
// and picks each class's caption: the most common caption among its rows, earliest on ties.
// That is the prompt with the class when labels come from the captions, and it must be one
// caption per class, since classification datasets share one text embedding per class prompt.
func classesOf(c *corpus) (*classInfo, error) {
	set := map[string]bool{}
	for i, ok := range c.ok {
		if ok {
			set[c.labels[i]] = true
		}
	}
	var names []string
	numeric := true
	for l := range set {
		names = append(names, l)
		if _, err := strconv.ParseInt(l, 10, 64); err != nil {
			numeric = false
		}
	}
	if numeric {
		sort.Slice(names, func(a, b int) bool {
			x, _ := strconv.ParseInt(names[a], 10, 64)
			y, _ := strconv.ParseInt(names[b], 10, 64)
			return x < y
		})
	} else {
		sort.Strings(names)
	}
	if len(names) < 2 {
		return nil, fmt.Errorf("classification noise needs at least 2 classes, the dataset has %d (%q)", len(names), names)
	}
	ci := &classInfo{names: names, index: make([]int, len(c.labels)), caption: make([]string, len(names)), donor: make([]int, len(names))}
	idx := map[string]int{}
	for k, n := range names {
		idx[n] = k
	}
	type capStat struct{ count, first int }
	stats := make([]map[string]*capStat, len(names))
	for k := range stats {
		stats[k] = map[string]*capStat{}
	}
	for i, ok := range c.ok {
		ci.index[i] = -1
		if !ok {
			continue
		}
		k := idx[c.labels[i]]
		ci.index[i] = k
		s := stats[k][c.captions[i]]
		if s == nil {
			s = &capStat{first: i}
			stats[k][c.captions[i]] = s
		}
		s.count++
	}
	owner := map[string]string{}
	for k, m := range stats {
		best := ""
		var bs *capStat
		for cap, s := range m {
			if bs == nil || s.count > bs.count || s.count == bs.count && s.first < bs.first {
				best, bs = cap, s
			}
		}
		if bs == nil {
			return nil, fmt.Errorf("class %q has no clean row to take its caption and text embedding from", names[k])
		}
		if len(m) > 1 {
			ci.warnings = append(ci.warnings, fmt.Sprintf("class %q has %d different captions; rows flipped to it take the most common, %q", names[k], len(m), best))
		}
		if o, dup := owner[best]; dup {
			return nil, fmt.Errorf("classes %q and %q share the caption %q, so a flip between them would not change the caption", o, names[k], best)
		}
		owner[best] = names[k]
		ci.caption[k], ci.donor[k] = best, bs.first
	}
	return ci, nil
}

// Prompt is a caption template with one "{}" for the class name.
type Prompt struct{ prefix, suffix string }

// ParsePrompt checks that a template has exactly one "{}".
func ParsePrompt(t string) (Prompt, error) {
	if strings.Count(t, "{}") != 1 {
		return Prompt{}, fmt.Errorf("--prompt %q must contain exactly one {} (where the class name goes)", t)
	}
	i := strings.Index(t, "{}")
	return Prompt{prefix: t[:i], suffix: t[i+2:]}, nil
}

// Format is the prompt with a class name.
func (p Prompt) Format(class string) string { return p.prefix + class + p.suffix }

// Class reads the class name back out of a caption made with the prompt. It forgives what
// prompt captions commonly vary in: letter case of the template's words, surrounding space,
// a final period, and "an" for "a" before the class ("A photo of an apple").
func (p Prompt) Class(caption string) (string, bool) {
	s := strings.TrimSpace(caption)
	pre, suf := strings.TrimLeft(p.prefix, " "), strings.TrimRight(p.suffix, " ")
	hasFold := func(s, x string, atEnd bool) bool {
		if len(s) < len(x) {
			return false
		}
		if atEnd {
			return strings.EqualFold(s[len(s)-len(x):], x)
		}
		return strings.EqualFold(s[:len(x)], x)
	}
	if !strings.HasSuffix(suf, ".") && strings.HasSuffix(s, ".") {
		s = strings.TrimSuffix(s, ".") // a final period the template does not have
	}
	if !hasFold(s, suf, true) {
		return "", false
	}
	switch {
	case hasFold(s, pre, false):
	case strings.HasSuffix(pre, "a ") && hasFold(s, pre[:len(pre)-1]+"n ", false):
		pre = pre[:len(pre)-1] + "n "
	default:
		return "", false
	}
	if len(pre)+len(suf) > len(s) {
		return "", false
	}
	class := strings.TrimSpace(s[len(pre) : len(s)-len(suf)])
	return class, class != ""
}

// Categories splits a category cell into its categories: a JSON list (as a Parquet list column
// reads), or names separated by commas or semicolons. They come back sorted and distinct.
func Categories(v string) []string {
	v = strings.TrimSpace(v)
	var parts []string
	var list []any
	if strings.HasPrefix(v, "[") && json.Unmarshal([]byte(v), &list) == nil {
		for _, x := range list {
			if x != nil {
				parts = append(parts, fmt.Sprint(x))
			}
		}
	} else {
		parts = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ';' })
	}
	set := map[string]bool{}
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			set[p] = true
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
