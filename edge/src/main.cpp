// aidetect-edge: score texts with a model bundle from the command line, no Python needed.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aidetect/detector.hpp"
#include "aidetect/errors.hpp"
#include "textio.hpp"
#include "unicode.hpp"

namespace {

using aidetect::InvalidInputError;

constexpr const char* kVersion = "0.1.0";
constexpr int kExitOk = 0, kExitOther = 1, kExitBundle = 2, kExitInput = 4;

constexpr const char* kUsage = R"(usage: aidetect-edge [--model DIR] [options] [FILE ...]
       aidetect-edge tokenize --tokenizer FILE [--words] [--jsonl] [FILE ...]

Score texts as AI-generated or human-written with a model bundle (P(AI) and the label per text).
Texts come from FILEs ('-' is stdin; default stdin): one per non-blank line, or JSONL records with a string
"text" field and an optional "id" when the name ends in .jsonl/.ndjson or --jsonl is given.

options:
  --model DIR        bundle directory, or a parent of fp32/ int8/ variants (default: $AIDETECT_MODEL)
  --variant NAME     variant of a multi-variant bundle (fp32, int8)
  --threads N        intra-op threads (default: every core this process may use)
  --batch-size N     windows per ONNX Runtime call (default 16; a dynamic-int8 bundle runs one per call)
  --batch-dependent  batch a dynamic-int8 bundle's windows anyway (a score then depends on its neighbours)
  --max-length N     tokens per window, at most the bundle's
  --truncate         score only the first window of long texts
  --max-false-positive-rate X
                     decide at the bundle's validated operating point with the largest false-positive rate
                     on human texts not above X (default: the bundle's own threshold)
  --json             one JSON object per line: index, id, line, label, score, windows, tokens
  --digits N         decimals of the score in --json output (default 6)
  --jsonl            read every input as JSONL
  --timing           print load and scoring times (wall and CPU) to stderr
  --version          print versions and exit

tokenize prints the content-token ids of each text as {"ids": [...]} (with --words, also the normalized,
pre-tokenized words), for checking the tokenizer against the `tokenizers` library.

Exit codes: 0 success, 2 bundle error, 4 bad input or usage, 1 anything else.)";

struct Args {
    bool tokenize = false;
    std::string model;
    std::string tokenizer;
    aidetect::DetectorOptions options;
    bool json = false;
    bool jsonl = false;
    bool words = false;
    bool timing = false;
    bool batch_dependent = false;
    int digits = 6;
    std::vector<std::string> files;
};

int parse_int(const std::string& flag, const std::string& value) {
    std::size_t used = 0;
    int out = 0;
    try {
        out = std::stoi(value, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used == 0 || used != value.size()) throw InvalidInputError(flag + " needs an integer, got '" + value + "'");
    return out;
}

double parse_double(const std::string& flag, const std::string& value) {
    std::size_t used = 0;
    double out = 0;
    try {
        out = std::stod(value, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used == 0 || used != value.size()) throw InvalidInputError(flag + " needs a number, got '" + value + "'");
    return out;  // range checked where it is used
}

Args parse_args(int argc, char** argv) {
    Args args;
    std::vector<std::string> list(argv + 1, argv + argc);
    std::size_t i = 0;
    if (!list.empty() && list[0] == "tokenize") {
        args.tokenize = true;
        i = 1;
    }
    bool only_files = false;
    for (; i < list.size(); ++i) {
        std::string arg = list[i];
        if (only_files || arg == "-" || arg.rfind("--", 0) != 0) {
            args.files.push_back(arg);
            continue;
        }
        if (arg == "--") {
            only_files = true;
            continue;
        }
        std::optional<std::string> inline_value;
        if (const auto eq = arg.find('='); eq != std::string::npos) {
            inline_value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
        }
        const auto value = [&]() -> std::string {
            if (inline_value) return *inline_value;
            if (i + 1 >= list.size()) throw InvalidInputError(arg + " needs a value");
            return list[++i];
        };
        if (arg == "--help" || arg == "-h") {
            std::cout << kUsage << "\n";
            std::exit(kExitOk);
        } else if (arg == "--version") {
            std::cout << "aidetect-edge " << kVersion << " (ONNX Runtime " << aidetect::onnxruntime_version()
                      << ", utf8proc Unicode " << aidetect::unicode::utf8proc_unicode_version() << ")\n";
            std::exit(kExitOk);
        } else if (arg == "--model") {
            args.model = value();
        } else if (arg == "--tokenizer") {
            args.tokenizer = value();
        } else if (arg == "--variant") {
            args.options.variant = value();
            if (args.options.variant != "fp32" && args.options.variant != "int8" && args.options.variant != "fp16") {
                throw InvalidInputError("--variant must be fp32, int8 or fp16, got '" + args.options.variant + "'");
            }
        } else if (arg == "--threads") {
            args.options.threads = parse_int(arg, value());
            if (args.options.threads < 1) throw InvalidInputError("--threads must be a positive integer");
        } else if (arg == "--batch-size") {
            args.options.batch_size = parse_int(arg, value());
        } else if (arg == "--max-length") {
            args.options.max_length = parse_int(arg, value());
            if (args.options.max_length < 1) throw InvalidInputError("--max-length must be a positive integer");
        } else if (arg == "--max-false-positive-rate") {
            args.options.max_false_positive_rate = parse_double(arg, value());
        } else if (arg == "--digits") {
            args.digits = parse_int(arg, value());
            if (args.digits < 0 || args.digits > 17) throw InvalidInputError("--digits must be in [0, 17]");
        } else if (arg == "--truncate" || arg == "--json" || arg == "--jsonl" || arg == "--words" || arg == "--timing" ||
                   arg == "--batch-dependent") {
            if (inline_value) throw InvalidInputError(arg + " takes no value");
            (arg == "--truncate"          ? args.options.truncation
             : arg == "--json"            ? args.json
             : arg == "--jsonl"           ? args.jsonl
             : arg == "--words"           ? args.words
             : arg == "--batch-dependent" ? args.batch_dependent
                                          : args.timing) = true;
        } else {
            throw InvalidInputError("unknown option " + arg + " (see `aidetect-edge --help`)");
        }
    }
    args.options.batch_invariant = !args.batch_dependent;
    return args;
}

std::string format_record(long index, const aidetect::TextItem& item, const aidetect::Prediction& p, const Args& args) {
    if (!args.json) {
        char score[32];
        std::snprintf(score, sizeof score, "%.4f", p.score);
        std::string prefix;
        if (!item.id.is_null()) prefix = (item.id.is_string() ? item.id.get<std::string>() : item.id.dump()) + "\t";
        return prefix + p.label + "\t" + score;
    }
    const double scale = std::pow(10.0, args.digits);
    const double rounded = std::round(p.score * scale) / scale;
    std::string out = "{\"index\": " + std::to_string(index);
    if (!item.id.is_null()) out += ", \"id\": " + item.id.dump();
    out += ", \"line\": " + std::to_string(item.line);
    out += ", \"label\": " + nlohmann::json(p.label).dump();
    out += ", \"score\": " + nlohmann::json(rounded).dump();
    out += ", \"windows\": " + std::to_string(p.windows);
    out += ", \"tokens\": " + std::to_string(p.tokens) + "}";
    return out;
}

/// User and system CPU time of the process so far, all threads.
double cpu_seconds() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    const auto tv = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
    return tv(usage.ru_utime) + tv(usage.ru_stime);
}

bool flush_ok() {
    std::cout.flush();
    return static_cast<bool>(std::cout);  // false once the reader went away (`... | head`)
}

int run_tokenize(const Args& args) {
    if (args.tokenizer.empty()) throw InvalidInputError("tokenize needs --tokenizer FILE (a tokenizer.json)");
    const auto tokenizer = aidetect::Tokenizer::from_file(args.tokenizer);
    aidetect::TextReader reader(args.files, args.jsonl);
    aidetect::TextItem item;
    while (reader.next(item)) {
        nlohmann::json record = {{"ids", tokenizer.encode(item.text)}};
        if (args.words) record["words"] = tokenizer.words(item.text);
        std::cout << record.dump() << "\n";
    }
    flush_ok();
    return kExitOk;
}

int run_predict(Args args) {
    if (args.model.empty()) {
        const char* env = std::getenv("AIDETECT_MODEL");
        if (env == nullptr || *env == '\0') {
            throw aidetect::ModelFilesMissingError("no model bundle: pass --model DIR or set AIDETECT_MODEL=<bundle dir>");
        }
        args.model = env;
    }
    using Clock = std::chrono::steady_clock;
    const auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
    const auto load_start = Clock::now();
    const auto detector = aidetect::Detector::from_pretrained(args.model, args.options);
    const double load_s = seconds(Clock::now() - load_start);
    Clock::duration scoring{};
    double scoring_cpu = 0;
    aidetect::TextReader reader(args.files, args.jsonl);
    const std::size_t chunk = std::max<std::size_t>(64, 4 * static_cast<std::size_t>(args.options.batch_size));
    std::vector<aidetect::TextItem> items;
    std::vector<std::string> texts;
    long index = 0;
    bool more = true;
    while (more) {
        items.clear();
        texts.clear();
        aidetect::TextItem item;
        while (items.size() < chunk && (more = reader.next(item))) {
            texts.push_back(item.text);
            items.push_back(std::move(item));
        }
        if (items.empty()) break;
        const auto start = Clock::now();
        const double cpu_start = cpu_seconds();
        const auto predictions = detector.predict(texts);
        scoring += Clock::now() - start;
        scoring_cpu += cpu_seconds() - cpu_start;
        std::string out;
        for (std::size_t k = 0; k < items.size(); ++k) out += format_record(index++, items[k], predictions[k], args) + "\n";
        std::cout << out;
        if (!flush_ok()) return kExitOk;
    }
    if (args.timing) {
        std::fprintf(stderr, "aidetect-edge: loaded in %.3f s; scored %ld texts in %.3f s (%d threads, %.3f s CPU)\n",
                     load_s, index, seconds(scoring), detector.threads(), scoring_cpu);
    }
    return kExitOk;
}

/// Print an error on one line and return its exit code.
int report(const std::exception& exc, int code) {
    std::string message = exc.what();
    std::replace(message.begin(), message.end(), '\n', ' ');
    std::replace(message.begin(), message.end(), '\r', ' ');
    std::cerr << "aidetect-edge: error: " << message << "\n";
    return code;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    std::ios::sync_with_stdio(false);
    try {
        const Args args = parse_args(argc, argv);
        return args.tokenize ? run_tokenize(args) : run_predict(args);
    } catch (const aidetect::BundleError& exc) {
        return report(exc, kExitBundle);
    } catch (const aidetect::ModelFilesMissingError& exc) {
        return report(exc, kExitBundle);
    } catch (const aidetect::InvalidInputError& exc) {
        return report(exc, kExitInput);
    } catch (const std::exception& exc) {
        return report(exc, kExitOther);
    }
}
