"""Generate ``edge/src/unicode_compat.inc``: where the tokenizer's Unicode tables differ from utf8proc's.

The C++ tokenizer takes character properties from utf8proc, but the ``tokenizers`` library (the reference)
answers from its own, older tables: categories from the ``unicode_categories`` crate (Unicode 8), canonical
decompositions from ``unicode-normalization-alignments``, lowercase from Rust's standard library (newer than
utf8proc's). Characters assigned in between are therefore plain letters to one and marks, punctuation or format
characters to the other. This script asks the reference about every code point, compares with utf8proc
(loaded with ctypes) and writes the exceptions as a C++ table, so the C++ side reproduces the reference exactly.

Usage: ``python edge/tools/gen_unicode_compat.py [--check] [--out PATH]``; ``--check`` exits 1 when the
committed table is out of date (a new ``tokenizers`` or utf8proc release).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import tokenizers
from tokenizers import normalizers, pre_tokenizers

OUT = Path(__file__).resolve().parents[1] / "src" / "unicode_compat.inc"
SURROGATES = range(0xD800, 0xE000)
CHUNK = 4096
SEP = "|"  # ASCII punctuation: never removed, lowercased, decomposed or reordered

# Property bits of the override table (mirrored in unicode.cpp).
OTHER, PUNCT, MARK, NFD_STALE, SPACE = 1, 2, 4, 8, 16
NAMES = {OTHER: "kOther", PUNCT: "kPunct", MARK: "kMark", NFD_STALE: "kNfdStale", SPACE: "kSpace"}

# utf8proc_category_t values.
CAT_MN, CAT_PC, CAT_PO, CAT_ZS, CAT_ZP, CAT_CC, CAT_CF, CAT_CO = 6, 12, 18, 23, 25, 26, 27, 29
ASCII_PUNCT = frozenset(b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


class _Property(ctypes.Structure):
    _fields_ = [("category", ctypes.c_int16), ("combining_class", ctypes.c_int16), ("bidi_class", ctypes.c_int16)]


def load_utf8proc() -> ctypes.CDLL:
    """The utf8proc shared library the C++ runner links."""
    name = ctypes.util.find_library("utf8proc")
    if name is None:
        raise SystemExit("libutf8proc not found: apt-get install libutf8proc-dev")
    lib = ctypes.CDLL(name)
    lib.utf8proc_category.restype = ctypes.c_int
    lib.utf8proc_category.argtypes = [ctypes.c_int32]
    lib.utf8proc_tolower.restype = ctypes.c_int32
    lib.utf8proc_tolower.argtypes = [ctypes.c_int32]
    lib.utf8proc_NFD.restype = ctypes.c_void_p
    lib.utf8proc_NFD.argtypes = [ctypes.c_char_p]
    lib.utf8proc_unicode_version.restype = ctypes.c_char_p
    lib.utf8proc_version.restype = ctypes.c_char_p
    return lib


def code_points() -> list[int]:
    return [cp for cp in range(0x110000) if cp not in SURROGATES]


def chunks(items: list[int]) -> Iterator[list[int]]:
    for begin in range(0, len(items), CHUNK):
        yield items[begin : begin + CHUNK]


def per_char(normalize: Callable[[str], str], cps: list[int], template: str = "{}") -> dict[int, str]:
    """``normalize(template.format(chr(cp)))`` for every code point, a chunk of them per call."""
    out: dict[int, str] = {}
    if ord(SEP) in cps:
        out[ord(SEP)] = normalize(template.format(SEP))
        cps = [cp for cp in cps if cp != ord(SEP)]
    for part in chunks(cps):
        joined = SEP.join(template.format(chr(cp)) for cp in part)
        pieces = normalize(joined).split(SEP)
        if len(pieces) != len(part):
            raise SystemExit(f"separator lost near U+{part[0]:04X}; cannot align the reference's output")
        out.update(zip(part, pieces, strict=True))
    return out


def pretokenized(cps: list[int]) -> tuple[set[int], set[int]]:
    """The code points BertPreTokenizer drops as whitespace and isolates as punctuation, from ``a<c>b``."""
    spaces: set[int] = set()
    punct: set[int] = set()
    bert = pre_tokenizers.BertPreTokenizer()
    for part in chunks(cps):
        text = " ".join(f"a{chr(cp)}b" for cp in part)
        pieces = {start: end for _, (start, end) in bert.pre_tokenize_str(text)}
        covers_middle = {start + 1 for start, end in pieces.items() if end - start >= 3}
        for i, cp in enumerate(part):
            middle = 4 * i + 1
            if pieces.get(middle) == middle + 1:
                punct.add(cp)
            elif middle not in covers_middle:
                spaces.add(cp)
    return spaces, punct


def utf8proc_nfd(lib: ctypes.CDLL) -> Callable[[str], str]:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))

    def nfd(text: str) -> str:
        ptr = lib.utf8proc_NFD(text.encode("utf-8"))
        try:
            return ctypes.string_at(ptr).decode("utf-8")
        finally:
            libc.free(ctypes.c_void_p(ptr))

    return nfd


def bert(clean: bool = False, strip: bool = False, lower: bool = False) -> Callable[[str], str]:
    normalizer = normalizers.BertNormalizer(
        clean_text=clean, handle_chinese_chars=False, strip_accents=strip, lowercase=lower
    )
    return normalizer.normalize_str


def differences(lib: ctypes.CDLL) -> tuple[dict[int, tuple[int, int]], dict[int, str]]:
    """``({cp: (mask, reference value bits)}, {cp: reference lowercase})`` where the two disagree."""
    cps = code_points()
    cleaned = per_char(bert(clean=True), cps, "a{}b")
    stripped = per_char(bert(strip=True), cps)
    lowered = per_char(bert(lower=True), cps)
    nfd = normalizers.NFD().normalize_str
    ref_nfd = per_char(nfd, cps)
    probes = (("", ""), ("\u0301", ""), ("", "\u0334"))  # ccc 230 before, ccc 1 after: reveals reordering
    ref_probe = [per_char(nfd, cps, before + "{}" + after) for before, after in probes]
    own = utf8proc_nfd(lib)
    cps_nul = [cp for cp in cps if cp != 0]  # utf8proc_NFD reads a NUL-terminated string
    own_probe = [per_char(own, cps_nul, before + "{}" + after) for before, after in probes]
    for probe, (before, after) in zip(own_probe, probes, strict=True):
        probe[0] = before + "\0" + after
    spaces, punct = pretokenized(cps)
    props = lib.utf8proc_get_property
    props.restype = ctypes.POINTER(_Property)
    props.argtypes = [ctypes.c_int32]

    overrides: dict[int, tuple[int, int]] = {}
    lowercase: dict[int, str] = {}
    for cp in cps:
        c = chr(cp)
        cat = lib.utf8proc_category(cp)
        mine = {
            OTHER: cat in (CAT_CC, CAT_CF, CAT_CO),
            PUNCT: cp in ASCII_PUNCT or CAT_PC <= cat <= CAT_PO,
            SPACE: CAT_ZS <= cat <= CAT_ZP or 9 <= cp <= 13 or cp == 0x85,
        }
        ref = {PUNCT: cp in punct, SPACE: cp in spaces}
        if cp not in (0, 9, 10, 13, 0xFFFD):  # the clean-up drops these (or keeps \t\n\r) before asking
            ref[OTHER] = cleaned[cp] == "ab"
        if ref_nfd[cp] == c:  # marks are only asked about after decomposition
            mine[MARK] = cat == CAT_MN
            ref[MARK] = stripped[cp] == ""
        same_nfd = all(o[cp] == r[cp] for o, r in zip(own_probe, ref_probe, strict=True))
        mine[NFD_STALE], ref[NFD_STALE] = False, not same_nfd
        reordered = any(r[cp] != b + c + a for (b, a), r in zip(probes, ref_probe, strict=True))
        if not same_nfd and (ref_nfd[cp] != c or reordered):
            raise SystemExit(f"U+{cp:04X}: the reference decomposes or reorders it differently from utf8proc")
        mask = value = 0
        for bit, want in ref.items():
            if mine.get(bit) != want:
                mask |= bit
                value |= bit if want else 0
        if mask:
            overrides[cp] = (mask, value)
        simple = chr(lib.utf8proc_tolower(cp))
        if lowered[cp] != simple:
            lowercase[cp] = lowered[cp]
    return overrides, lowercase


def ranges(overrides: dict[int, tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    out: list[list[int]] = []
    for cp in sorted(overrides):
        mask, value = overrides[cp]
        if out and out[-1][1] == cp - 1 and out[-1][2:] == [mask, value]:
            out[-1][1] = cp
        else:
            out.append([cp, cp, mask, value])
    return [(a, b, m, v) for a, b, m, v in out]


def bits(value: int) -> str:
    names = [name for bit, name in NAMES.items() if value & bit]
    return " | ".join(names) if names else "0"


def render(lib: ctypes.CDLL) -> str:
    overrides, lowercase = differences(lib)
    lines = [
        "// Generated by edge/tools/gen_unicode_compat.py; do not edit.",
        f"// Reference: tokenizers {tokenizers.__version__}; "
        f"utf8proc {lib.utf8proc_version().decode()} (Unicode {lib.utf8proc_unicode_version().decode()}).",
        "// Code points whose properties the reference tokenizer sees differently from utf8proc:",
        "// {first, last, which properties differ, the reference's value of them}.",
        "constexpr PropertyOverride kPropertyOverrides[] = {",
    ]
    for first, last, mask, value in ranges(overrides):
        lines.append(f"    {{0x{first:04X}, 0x{last:04X}, {bits(mask)}, {bits(value)}}},")
    lines += ["};", "", "// Lowercase mappings where the reference (Rust's char::to_lowercase) differs from utf8proc."]
    lines.append("constexpr LowercaseOverride kLowercaseOverrides[] = {")
    for cp in sorted(lowercase):
        target = ", ".join(f"0x{ord(x):04X}" for x in lowercase[cp])
        lines.append(f"    {{0x{cp:04X}, {len(lowercase[cp])}, {{{target}}}}},")
    lines.append("};")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed table is out of date")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render(load_utf8proc())
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        if current != text:
            print(f"{args.out} is out of date: run python {Path(__file__).as_posix()}", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
