"""The C++ tokenizer against the ``tokenizers`` library: ids (and words) on real and generated text.

Run on the tiny fixture tokenizer and on the real MiniLM (BERT uncased) vocabulary, on texts from the shared
data, on hypothesis-generated unicode and on every code point; and on both with a normalizer that folds
look-alike letters, Sequence[Replace ..., BertNormalizer].
"""

from __future__ import annotations

import gzip
import json
import random
import string
from pathlib import Path

import pytest
from edge_support import LOOKALIKES, Runner, folded, jsonl, replace_node
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from export.data import REPO_DATA_DIR

DATA_DIR = REPO_DATA_DIR
SURROGATES = range(0xD800, 0xE000)
PER_LINE = 256  # code points per probe line in the exhaustive test


def reference(path: Path | str, *, json_text: str | None = None) -> Tokenizer:
    tokenizer = Tokenizer.from_str(json_text) if json_text is not None else Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def reference_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def edge_ids(run_edge: Runner, tokenizer_path: Path, texts: list[str], *extra: str) -> list[dict]:
    done = run_edge("tokenize", "--tokenizer", tokenizer_path, "--jsonl", *extra, input=jsonl(texts))
    assert done.returncode == 0, done.stderr
    records = done.records()
    assert len(records) == len(texts)
    return records


def assert_same_ids(run_edge: Runner, tokenizer_path: Path, texts: list[str]) -> None:
    expected = reference_ids(reference(tokenizer_path), texts)
    got = [r["ids"] for r in edge_ids(run_edge, tokenizer_path, texts)]
    for text, want, have in zip(texts, expected, got, strict=True):
        assert have == want, f"ids differ for {text[:200]!r}"


def _read_data(name: str, every: int, limit: int, keep=lambda row: True) -> list[str]:
    path = DATA_DIR / name
    if not path.is_file():
        return []
    texts = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f):
            if number % every == 0:
                row = json.loads(line)
                if keep(row):
                    texts.append(row["text"])
                    if len(texts) == limit:
                        break
    return texts


@pytest.fixture(scope="module")
def real_texts(sample_texts: list[str]) -> list[str]:
    """Texts from both data sets (only the OUTFOX ``valid`` half), or the fixture sample when absent."""
    texts = _read_data("detectgpt_family.jsonl.gz", 29, 600)
    texts += _read_data("outfox_essays.jsonl.gz", 7, 200, keep=lambda row: row["group"].startswith("outfox:valid:"))
    return texts or sample_texts


@pytest.fixture(scope="module")
def tiny_tokenizer_path(tiny_bundle: Path) -> Path:
    return tiny_bundle / "tokenizer.json"


def test_real_texts_tiny(run_edge, tiny_tokenizer_path, real_texts):
    assert_same_ids(run_edge, tiny_tokenizer_path, real_texts)


def test_real_texts_minilm(run_edge, minilm_tokenizer_path, real_texts):
    assert_same_ids(run_edge, minilm_tokenizer_path, real_texts)


EDGE_CASES = [
    "",
    " \t\r\n ",
    "Hello, World!",
    "İstanbul ǅemal ΣΟΦΙΑ ß ẞ ﬁ",
    "café naïve façade e\u0301\u0316 a\u0345\u0301",
    "你好世界 日本語のテキスト 한국어 𠀀𪜀",
    "😀 👩‍👩‍👧 🇩🇪 ❤️ 👍🏽",
    "\x00\x07\x1b[31m\u200b\u200d\ufeff\u00ad\x85\x0b\x0c\u2028\u2029\u3000\u00a0",
    "\ufffd\ue000\U000f0000",
    "a" * 100,
    "a" * 101,
    "x" + "é" * 99,
    "[CLS] [SEP][UNK]x[MASK] [PAD] [cls]",
    "state-of-the-art, U.S.A. (1990–2000) «quotes» “curly” ¿qué? ¡sí!",
    "مرحبا بالعالم שלום",
    "\u0890\u08e2\U000110cd\U00013430 \u061d\u2e43 \u08d4\u07fd",  # newer than the reference's tables
    "\u1c89\ua7cb\U00010d50",  # lowercase mappings newer than utf8proc's
]


@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_edge_cases(run_edge, which, tiny_tokenizer_path, minilm_tokenizer_path):
    path = tiny_tokenizer_path if which == "tiny" else minilm_tokenizer_path
    assert_same_ids(run_edge, path, EDGE_CASES)


def test_lone_surrogates_and_invalid_utf8_are_replaced(run_edge, minilm_tokenizer_path):
    """Python replaces lone surrogates with U+FFFD (which the clean-up drops); so does the runner."""
    texts = ["a\ud800b", "x\udfffy z", "\ud83d"]
    cleaned = [t.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace") for t in texts]
    expected = reference_ids(reference(minilm_tokenizer_path), cleaned)
    assert [r["ids"] for r in edge_ids(run_edge, minilm_tokenizer_path, texts)] == expected
    raw = b"caf\xc3 ok\nhello \xff\xfeworld\n\xe2\x82 end\n"
    done = run_edge("tokenize", "--tokenizer", minilm_tokenizer_path, input=raw)
    assert done.returncode == 0, done.stderr
    lines = raw.decode("utf-8", "replace").splitlines()
    assert [r["ids"] for r in done.records()] == reference_ids(reference(minilm_tokenizer_path), lines)


LETTERS = st.sampled_from(string.ascii_letters + "àéîõüçñÅØßİıǅΣςДжיאب")
PIECES = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=24),
    st.text(st.one_of(LETTERS, st.characters(min_codepoint=0x300, max_codepoint=0x36F)), max_size=24),
    st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), max_size=8),
    st.text(st.characters(min_codepoint=0x20000, max_codepoint=0x2A6DF), max_size=4),
    st.text(st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF), max_size=6),
    st.text(st.characters(categories=["Cc", "Cf", "Co", "Zs", "Zl", "Zp", "Mn", "Mc", "Me"]), max_size=6),
    st.text(st.characters(categories=["P", "S"]), max_size=6),
    st.text(LETTERS, min_size=90, max_size=130),  # around max_input_chars_per_word
    st.sampled_from(["[CLS]", "[SEP]", "[UNK]", "[MASK]", "[PAD]", " ", "\n", "\r\n", "👩‍👩‍👧", "e\u0301"]),
)
TEXTS = st.lists(PIECES, max_size=10).map("".join)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(TEXTS, min_size=60, max_size=60))
def test_generated_unicode(run_edge, tiny_tokenizer_path, minilm_tokenizer_path, batch):
    for path in (tiny_tokenizer_path, minilm_tokenizer_path):
        assert_same_ids(run_edge, path, batch)


def _variant(path: Path, **normalizer: bool) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    data["normalizer"].update(normalizer)
    return json.dumps(data)


@pytest.mark.parametrize(
    "normalizer",
    [
        pytest.param({}, id="uncased"),
        pytest.param({"lowercase": False, "strip_accents": False}, id="cased", marks=pytest.mark.slow),
        pytest.param({"lowercase": True, "strip_accents": False}, id="lowercase-only", marks=pytest.mark.slow),
    ],
)
def test_every_code_point(run_edge, minilm_tokenizer_path, tmp_path, normalizer):
    """Each code point between two letters, under three BertNormalizer settings: words and ids match."""
    text = _variant(minilm_tokenizer_path, **normalizer)
    path = tmp_path / "tokenizer.json"
    path.write_text(text, encoding="utf-8")
    tokenizer = reference(path, json_text=text)
    cps = [cp for cp in range(0x110000) if cp not in SURROGATES]
    lines = [" ".join(f"a{chr(cp)}b" for cp in cps[i : i + PER_LINE]) for i in range(0, len(cps), PER_LINE)]
    records = edge_ids(run_edge, path, lines, "--words")
    expected_ids = reference_ids(tokenizer, lines)
    for line, record, ids in zip(lines, records, expected_ids, strict=True):
        normalized = tokenizer.normalizer.normalize_str(line)
        words = [w for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]
        if record["words"] != words or record["ids"] != ids:
            first = next(
                (i for i, (a, b) in enumerate(zip(record["words"], words, strict=False)) if a != b), len(words)
            )
            pytest.fail(
                f"line starting U+{ord(line[1]):04X}: words differ at {first}: "
                f"{record['words'][first - 2 : first + 3]} vs {words[first - 2 : first + 3]}"
            )


def test_added_tokens_with_strip_and_normalization(run_edge, minilm_tokenizer_path, tmp_path):
    """Added tokens matched before (special) and after (normalized) normalization, with lstrip/rstrip."""
    from tokenizers import AddedToken

    tokenizer = reference(minilm_tokenizer_path)
    tokenizer.add_special_tokens([AddedToken("<doc>", lstrip=True, rstrip=True, normalized=False)])
    tokenizer.add_tokens([AddedToken("New York", normalized=True), AddedToken("ÉTÉ", normalized=True)])
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    texts = ["I love new york <doc>  and NEW YORK.", "  <doc>x<doc> été ÉTÉ ete", "newyork new  york <DOC>"]
    assert_same_ids(run_edge, path, texts)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["model"].update(type="BPE"), "tokenizer model BPE is not supported"),
        (lambda d: d.update(normalizer={"type": "Lowercase"}), "normalizer Lowercase is not supported"),
        (lambda d: d.update(pre_tokenizer={"type": "ByteLevel"}), "pre-tokenizer ByteLevel is not supported"),
        (lambda d: d.update(post_processor={"type": "Weird"}), "post-processor Weird is not supported"),
        (lambda d: d["added_tokens"][0].update(single_word=True), "single_word"),
        (lambda d: d["model"].update(unk_token="<nope>"), "<nope> is not in the vocabulary"),
    ],
)
def test_unsupported_tokenizers_are_refused(run_edge, minilm_tokenizer_path, tmp_path, change, message):
    data = json.loads(minilm_tokenizer_path.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    done = run_edge("tokenize", "--tokenizer", path, input="hello\n")
    assert done.returncode == 2
    assert message in done.stderr and str(path) in done.stderr


def test_malformed_tokenizer_json_is_refused(run_edge, tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text('{"model": ', encoding="utf-8")
    done = run_edge("tokenize", "--tokenizer", path, input="hello\n")
    assert done.returncode == 2 and "not a valid tokenizers tokenizer" in done.stderr


# Multi-character patterns: overlapping occurrences, a replacement that creates a later step's pattern, a
# deletion, a decomposed accent and a replacement that brings in a look-alike (folded by no later step).
EXTRA_REPLACES = [("aa", "b"), ("ab", "\u0430b"), ("xyz", ""), ("e\u0301", "\u00e9"), ("ss", "\u03bf\u03bf")]


@pytest.fixture(scope="module")
def folded_paths(tiny_tokenizer_path, minilm_tokenizer_path, tmp_path_factory) -> list[Path]:
    """Tiny and MiniLM tokenizers folding look-alikes; MiniLM also with multi-character patterns, and with
    Replace nodes after its BertNormalizer."""
    out = tmp_path_factory.mktemp("folded")
    variants = {
        "tiny": folded(tiny_tokenizer_path),
        "minilm": folded(minilm_tokenizer_path),
        "minilm-extra": folded(minilm_tokenizer_path, extra=EXTRA_REPLACES, after=[("b", "B\u0430"), ("\u00e9", "e")]),
    }
    paths = []
    for name, text in variants.items():
        path = out / f"{name}.json"
        path.write_text(text, encoding="utf-8")
        reference(path)  # the tokenizers library reads it
        paths.append(path)
    return paths


FOLD_EDGE_CASES = [
    "Hеllо wоrld",  # Cyrillic е and о inside Latin words
    "ТНЕ СОМРАNY МАКЕS РАYМЕNТS",  # all-caps, all Cyrillic look-alikes
    "Τhe ΒΕΤΑ ΙΝ ΟΝΕ αnd οnly",
    "aaaaa aaa ab aab xyzxyz xyxyz",
    "cafe\u0301 e\u0301e\u0301 ss sss [CLS]а[SEP] [UNK]",
    "Меssage:\tрlеаsе ехресt а rерlу\r\nsооn.",
    "日本語の аpple 😀 а\u0301 о\u0308",
    "",
    "а",
    "\u0430" * 130,
]


def test_folding_edge_cases(run_edge, folded_paths):
    for path in folded_paths:
        assert_same_ids(run_edge, path, FOLD_EDGE_CASES)


def test_folding_reads_look_alikes_as_latin(run_edge, folded_paths, minilm_tokenizer_path, real_texts):
    """Real texts with half their foldable letters swapped for look-alikes get the ids of the clean texts."""
    latin: dict[str, str] = {}
    for char, letter in LOOKALIKES.items():
        latin.setdefault(letter, char)
    rng = random.Random(7)
    clean = real_texts[:200]
    attacked = ["".join(latin[c] if c in latin and rng.random() < 0.5 else c for c in t) for t in clean]
    path = folded_paths[1]  # MiniLM with the look-alikes only
    assert_same_ids(run_edge, path, attacked)
    ours = [r["ids"] for r in edge_ids(run_edge, path, attacked)]
    assert ours == [r["ids"] for r in edge_ids(run_edge, path, clean)]
    unfolded = [r["ids"] for r in edge_ids(run_edge, minilm_tokenizer_path, attacked)]
    assert sum(a != b for a, b in zip(unfolded, ours, strict=True)) > len(clean) // 2  # the fold matters


FOLD_LETTERS = st.sampled_from(string.ascii_letters + "".join(LOOKALIKES) + "\u0301\u00e9")  # distinct
FOLD_PIECES = st.one_of(
    st.text(FOLD_LETTERS, max_size=16),
    st.text(st.one_of(FOLD_LETTERS, st.characters(min_codepoint=0x300, max_codepoint=0x36F)), max_size=12),
    st.text(st.characters(min_codepoint=0x370, max_codepoint=0x4FF), max_size=8),  # all of Greek and Cyrillic
    st.sampled_from(["aa", "aaa", "ab", "xyz", "e\u0301", "ss", " ", "\u0430a", "[CLS]", "[UNK]"]),
    PIECES,  # everything else, long words included
)
FOLD_TEXTS = st.lists(FOLD_PIECES, max_size=10).map("".join)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(FOLD_TEXTS, min_size=60, max_size=60))
def test_folding_generated_unicode(run_edge, folded_paths, batch):
    for path in folded_paths:
        assert_same_ids(run_edge, path, batch)


def test_the_factory_fold(run_edge, minilm_tokenizer_path, real_texts, tmp_path):
    """The fold export.normalize writes into bundles: every confusable, alone and inside words."""
    normalize = pytest.importorskip("export.normalize")
    data = normalize.with_fold(json.loads(minilm_tokenizer_path.read_text(encoding="utf-8")))
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    confusables = "".join(normalize.CONFUSABLES)
    texts = [confusables, " ".join(confusables), *(f"w{c}rd {c}{c}x {c.upper()}" for c in confusables)]
    assert_same_ids(run_edge, path, texts + real_texts[:100])


@pytest.mark.parametrize(
    ("normalizer", "message"),
    [
        (
            {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"Regex": "[а-я]"}, "content": "x"}]},
            'normalizer Replace with a Regex pattern ("[а-я]") is not supported by the C++ runner',
        ),
        ({"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}, "Regex pattern"),
        (
            {"type": "Sequence", "normalizers": [replace_node("а", "a"), {"type": "NFKC"}]},
            "normalizer NFKC is not supported",
        ),
        ({"type": "Sequence", "normalizers": [replace_node("", "a")]}, "normalizer Replace with an empty pattern"),
        ({"type": "Replace", "pattern": {"String": "a"}, "content": 5}, "normalizer Replace needs a string content"),
        ({"type": "Replace", "pattern": "a", "content": "b"}, 'normalizer Replace needs a pattern {"String": ...}'),
    ],
)
def test_unsupported_normalizers_are_refused(run_edge, minilm_tokenizer_path, tmp_path, normalizer, message):
    data = json.loads(minilm_tokenizer_path.read_text(encoding="utf-8"))
    data["normalizer"] = normalizer
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    done = run_edge("tokenize", "--tokenizer", path, input="hello\n")
    assert done.returncode == 2
    assert message in done.stderr and str(path) in done.stderr
