#include "unicode.hpp"

#include <utf8proc.h>

#include <algorithm>
#include <cstddef>
#include <iterator>

namespace aidetect::unicode {
namespace {

enum : std::uint8_t { kOther = 1, kPunct = 2, kMark = 4, kNfdStale = 8, kSpace = 16 };

struct PropertyOverride {
    char32_t first;
    char32_t last;
    std::uint8_t mask;
    std::uint8_t value;
};

struct LowercaseOverride {
    char32_t cp;
    std::size_t size;
    char32_t lower[3];
};

#include "unicode_compat.inc"

/// The reference's value of property `bit` for `cp`, if it differs from utf8proc's; -1 when it does not.
int override_of(char32_t cp, std::uint8_t bit) {
    const auto* end = std::end(kPropertyOverrides);
    const auto* it = std::upper_bound(std::begin(kPropertyOverrides), end, cp,
                                      [](char32_t c, const PropertyOverride& o) { return c < o.first; });
    if (it == std::begin(kPropertyOverrides)) return -1;
    --it;
    if (cp > it->last || !(it->mask & bit)) return -1;
    return (it->value & bit) ? 1 : 0;
}

utf8proc_category_t category(char32_t cp) { return utf8proc_category(static_cast<utf8proc_int32_t>(cp)); }

bool with_override(char32_t cp, std::uint8_t bit, bool own) {
    if (cp < 0x80) return own;  // ASCII is the same everywhere
    const int ref = override_of(cp, bit);
    return ref < 0 ? own : ref == 1;
}

/// Bytes of a UTF-8 sequence led by `lead` and the allowed range of its second byte (Unicode Table 3-7).
struct Lead {
    int extra;
    unsigned char low;
    unsigned char high;
};

Lead lead_of(unsigned char b) {
    if (b >= 0xC2 && b <= 0xDF) return {1, 0x80, 0xBF};
    if (b == 0xE0) return {2, 0xA0, 0xBF};
    if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) return {2, 0x80, 0xBF};
    if (b == 0xED) return {2, 0x80, 0x9F};  // no encoded surrogates
    if (b == 0xF0) return {3, 0x90, 0xBF};
    if (b >= 0xF1 && b <= 0xF3) return {3, 0x80, 0xBF};
    if (b == 0xF4) return {3, 0x80, 0x8F};
    return {-1, 0, 0};
}

}  // namespace

std::u32string decode_utf8(std::string_view bytes) {
    std::u32string out;
    out.reserve(bytes.size());
    const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
    const std::size_t n = bytes.size();
    std::size_t i = 0;
    while (i < n) {
        const unsigned char b = s[i];
        if (b < 0x80) {
            out.push_back(b);
            ++i;
            continue;
        }
        const Lead lead = lead_of(b);
        if (lead.extra < 0) {
            out.push_back(kReplacement);
            ++i;
            continue;
        }
        char32_t cp = b & (0x3F >> lead.extra);
        std::size_t j = i + 1;
        unsigned char low = lead.low, high = lead.high;
        bool ok = true;
        for (int k = 0; k < lead.extra; ++k, ++j) {
            if (j >= n || s[j] < low || s[j] > high) {
                ok = false;
                break;
            }
            cp = (cp << 6) | (s[j] & 0x3F);
            low = 0x80;
            high = 0xBF;
        }
        out.push_back(ok ? cp : kReplacement);  // a maximal invalid subpart is one U+FFFD
        i = j;
    }
    return out;
}

void append_utf8(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

std::string encode_utf8(std::u32string_view text) {
    std::string out;
    out.reserve(text.size());
    for (char32_t cp : text) append_utf8(out, cp);
    return out;
}

std::string sanitize_utf8(std::string_view bytes) {
    const bool ascii = std::all_of(bytes.begin(), bytes.end(), [](char c) { return (c & 0x80) == 0; });
    if (ascii) return std::string(bytes);
    return encode_utf8(decode_utf8(bytes));
}

bool is_whitespace(char32_t cp) {
    if (cp < 0x80) return (cp >= 9 && cp <= 13) || cp == ' ';
    const auto cat = category(cp);
    const bool own = cp == 0x85 || cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL ||
                     cat == UTF8PROC_CATEGORY_ZP;
    return with_override(cp, kSpace, own);
}

bool is_python_space(char32_t cp) {
    const auto* prop = utf8proc_get_property(static_cast<utf8proc_int32_t>(cp));
    return prop->bidi_class == UTF8PROC_BIDI_CLASS_WS || prop->bidi_class == UTF8PROC_BIDI_CLASS_B ||
           prop->bidi_class == UTF8PROC_BIDI_CLASS_S || prop->category == UTF8PROC_CATEGORY_ZS;
}

bool is_other(char32_t cp) {
    const auto cat = category(cp);
    const bool own = cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CO;
    return with_override(cp, kOther, own);
}

bool is_bert_punctuation(char32_t cp) {
    if (cp < 0x80) {
        return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
               (cp >= 123 && cp <= 126);
    }
    const auto cat = category(cp);
    return with_override(cp, kPunct, cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO);
}

bool is_nonspacing_mark(char32_t cp) { return with_override(cp, kMark, category(cp) == UTF8PROC_CATEGORY_MN); }

bool is_chinese_char(char32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
           (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) ||
           (cp >= 0x2B920 && cp <= 0x2CEAF) || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

void append_nfd(char32_t cp, std::u32string& out) {
    if (cp < 0xC0 || override_of(cp, kNfdStale) == 1) {
        out.push_back(cp);
        return;
    }
    utf8proc_int32_t buffer[32];
    int boundclass = 0;
    const auto n = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(cp), buffer, 32, UTF8PROC_DECOMPOSE,
                                           &boundclass);
    if (n <= 0 || n > 32) {
        out.push_back(cp);
        return;
    }
    for (utf8proc_ssize_t k = 0; k < n; ++k) out.push_back(static_cast<char32_t>(buffer[k]));
}

int combining_class(char32_t cp) {
    if (cp < 0x300 || override_of(cp, kNfdStale) == 1) return 0;
    return utf8proc_get_property(static_cast<utf8proc_int32_t>(cp))->combining_class;
}

void canonical_order(std::u32string& text) {
    const std::size_t n = text.size();
    std::size_t i = 0;
    while (i < n) {
        if (combining_class(text[i]) == 0) {
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < n && combining_class(text[j]) != 0) ++j;
        if (j - i > 1) {
            std::stable_sort(text.begin() + static_cast<std::ptrdiff_t>(i), text.begin() + static_cast<std::ptrdiff_t>(j),
                             [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
        }
        i = j;
    }
}

void append_lowercase(char32_t cp, std::u32string& out) {
    if (cp < 0x80) {
        out.push_back(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
        return;
    }
    const auto* end = std::end(kLowercaseOverrides);
    const auto* it = std::lower_bound(std::begin(kLowercaseOverrides), end, cp,
                                      [](const LowercaseOverride& o, char32_t c) { return o.cp < c; });
    if (it != end && it->cp == cp) {
        out.append(it->lower, it->size);
        return;
    }
    out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
}

std::string utf8proc_unicode_version() { return ::utf8proc_unicode_version(); }

}  // namespace aidetect::unicode
