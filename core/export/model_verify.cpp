#include "export/model_verify.h"

#include "io/checkpoint.h"
#include "io/gguf_reader.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <sys/stat.h>

namespace qb::exporting {

namespace {

using VT = io::GgufValueType;

struct KeyRule {
    const char* suffix; // after "{arch}." or a full key when arch-independent
    VT type;
    bool required;
    bool perArch;
};

const KeyRule kRules[] = {
    {"general.architecture", VT::String, true, false},
    {"general.alignment", VT::UInt32, false, false},
    {"general.file_type", VT::UInt32, false, false},
    {"general.quantization_version", VT::UInt32, false, false},
    {"context_length", VT::UInt32, true, true},
    {"embedding_length", VT::UInt32, true, true},
    {"block_count", VT::UInt32, true, true},
    {"feed_forward_length", VT::UInt32, true, true},
    {"attention.head_count", VT::UInt32, true, true},
    {"attention.head_count_kv", VT::UInt32, false, true},
    {"attention.layer_norm_rms_epsilon", VT::Float32, true, true},
    {"rope.freq_base", VT::Float32, false, true},
    {"rope.dimension_count", VT::UInt32, false, true},
    {"vocab_size", VT::UInt32, false, true},
    {"tokenizer.ggml.model", VT::String, true, false},
    {"tokenizer.ggml.pre", VT::String, false, false},
    {"tokenizer.ggml.bos_token_id", VT::UInt32, false, false},
    {"tokenizer.ggml.eos_token_id", VT::UInt32, false, false},
    {"tokenizer.ggml.unknown_token_id", VT::UInt32, false, false},
    {"tokenizer.ggml.padding_token_id", VT::UInt32, false, false},
    {"tokenizer.ggml.add_bos_token", VT::Bool, false, false},
    {"tokenizer.ggml.add_eos_token", VT::Bool, false, false},
};

void checkArray(const io::GgufFile& f, const char* key, VT elem, bool required, std::vector<std::string>& problems)
{
    const io::GgufValue* v = f.find(key);
    if (!v) {
        if (required) problems.push_back(std::string("missing key ") + key);
        return;
    }
    if (!v->isArray() || v->elementType != elem)
        problems.push_back(std::string("key ") + key + " must be an array of " + io::ggufValueTypeName(elem));
}

Status scanValues(const TensorInfo& t, VerifiedTensor& out)
{
    std::vector<float> buf(std::size_t(t.numel()));
    QB_TRY_STATUS(io::readTensorF32(t, buf.data()));
    for (float x : buf) {
        if (!std::isfinite(x)) ++out.nonFinite;
        else out.maxAbs = std::max(out.maxAbs, double(std::fabs(x)));
    }
    return {};
}

} // namespace

Result<VerifyReport> verifyGgufFile(const std::string& path, const std::vector<ExpectedTensor>& expected,
                                    RunContext* ctx)
{
    QB_TRY(file, io::readGgufFile(path));
    VerifyReport r;
    r.path = path;
    r.format = "gguf";
    r.architecture = file->architecture();
    r.tensorCount = file->tensors.size();
    r.kvCount = file->metadata.size();
    struct stat st{};
    if (::stat(path.c_str(), &st) == 0) r.fileBytes = std::uint64_t(st.st_size);
    auto& problems = r.problems;
    // The model-level checks `info` and every loader apply (config, duplicate tensor names,
    // required tensors and their shapes): a file that cannot be opened as a model never verifies.
    if (auto ck = io::openCheckpoint(path); !ck.ok())
        problems.push_back("cannot be opened as a model: " + ck.error().toString());
    if (file->version != 3) problems.push_back("GGUF version " + std::to_string(file->version) + ", expected 3");
    for (const KeyRule& rule : kRules) {
        const std::string key = rule.perArch ? r.architecture + "." + rule.suffix : rule.suffix;
        const io::GgufValue* v = file->find(key);
        if (!v) {
            if (rule.required) problems.push_back("missing key " + key);
        } else if (v->type != rule.type) {
            problems.push_back("key " + key + " has type " + io::ggufValueTypeName(v->type) + ", llama.cpp expects " +
                               io::ggufValueTypeName(rule.type));
        }
    }
    checkArray(*file, "tokenizer.ggml.tokens", VT::String, true, problems);
    checkArray(*file, "tokenizer.ggml.token_type", VT::Int32, false, problems);
    checkArray(*file, "tokenizer.ggml.scores", VT::Float32, false, problems);
    checkArray(*file, "tokenizer.ggml.merges", VT::String, false, problems);
    if (const auto* m = file->find("tokenizer.ggml.model"); m && m->toString() && *m->toString() == "gpt2")
        checkArray(*file, "tokenizer.ggml.merges", VT::String, true, problems);
    // Token count must equal the embedding rows (llama.cpp sizes token_embd from it).
    if (const auto* toks = file->find("tokenizer.ggml.tokens"))
        for (const TensorInfo& t : file->tensors)
            if (t.name == "token_embd.weight" && t.shape.size() == 2 && std::int64_t(toks->arraySize()) != t.shape[0])
                problems.push_back("tokenizer.ggml.tokens has " + std::to_string(toks->arraySize()) +
                                   " entries, token_embd.weight has " + std::to_string(t.shape[0]) + " rows");

    if (!expected.empty()) {
        if (expected.size() != file->tensors.size())
            problems.push_back("expected " + std::to_string(expected.size()) + " tensors, the file has " +
                               std::to_string(file->tensors.size()));
        for (std::size_t i = 0; i < std::min(expected.size(), file->tensors.size()); ++i) {
            const TensorInfo& t = file->tensors[i];
            const ExpectedTensor& e = expected[i];
            const std::vector<std::int64_t> ne(t.shape.rbegin(), t.shape.rend());
            const int type = t.ggmlType >= 0          ? t.ggmlType
                             : t.dtype == DType::F16  ? int(io::GgmlType::F16)
                             : t.dtype == DType::BF16 ? int(io::GgmlType::BF16)
                                                      : int(io::GgmlType::F32);
            if (t.name != e.name)
                problems.push_back("tensor " + std::to_string(i) + " is " + t.name + ", expected " + e.name);
            if (type != int(e.type))
                problems.push_back("tensor " + t.name + " has type " + io::ggmlTypeName(type) + ", expected " +
                                   io::ggmlTypeName(int(e.type)));
            if (ne != e.ne)
                problems.push_back("tensor " + t.name + " has ne " + shapeString(ne) + ", expected " +
                                   shapeString(e.ne));
        }
    }
    if (ctx) ctx->beginStage("verify", std::int64_t(file->tensors.size()), path);
    for (const TensorInfo& t : file->tensors) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("verify " + path);
        if (t.name.size() >= 64) problems.push_back("tensor name " + t.name + " is 64 bytes or longer");
        VerifiedTensor v;
        v.name = t.name;
        v.type = t.ggmlType >= 0 ? io::ggmlTypeName(t.ggmlType) : dtypeName(t.dtype);
        v.shape.assign(t.shape.rbegin(), t.shape.rend());
        if (auto s = scanValues(t, v); !s.ok()) problems.push_back(s.error().toString());
        if (v.nonFinite)
            problems.push_back("tensor " + t.name + " has " + std::to_string(v.nonFinite) + " NaN/Inf values");
        r.tensors.push_back(std::move(v));
        if (ctx) ctx->advance();
    }
    r.ok = problems.empty();
    return r;
}

Result<VerifyReport> verifyModelFile(const std::string& path, RunContext* ctx)
{
    const bool isGguf = path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
    if (isGguf) return verifyGgufFile(path, {}, ctx);
    QB_TRY(ck, io::openCheckpoint(path));
    VerifyReport r;
    r.path = path;
    r.format = io::checkpointFormatName(ck->format);
    r.architecture = architectureName(ck->config.architecture);
    r.tensorCount = ck->tensors.size();
    r.fileBytes = ck->fileBytes;
    for (const auto& w : ck->warnings)
        r.problems.push_back("warning: " + w);
    if (ctx) ctx->beginStage("verify", std::int64_t(ck->tensors.size()), path);
    for (const TensorInfo& t : ck->tensors) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("verify " + path);
        VerifiedTensor v;
        v.name = t.name;
        v.type = t.ggmlType >= 0 ? io::ggmlTypeName(t.ggmlType) : dtypeName(t.dtype);
        v.shape = t.shape;
        if (auto s = scanValues(t, v); !s.ok()) r.problems.push_back(s.error().toString());
        if (v.nonFinite)
            r.problems.push_back("tensor " + t.name + " has " + std::to_string(v.nonFinite) + " NaN/Inf values");
        r.tensors.push_back(std::move(v));
        if (ctx) ctx->advance();
    }
    r.ok = true;
    for (const auto& p : r.problems)
        if (p.rfind("warning: ", 0) != 0) r.ok = false;
    return r;
}

Status VerifyReport::verificationStatus(const std::string& what, const std::string& target) const
{
    if (ok) return {};
    std::string all;
    for (const auto& p : problems)
        all += (all.empty() ? "" : "; ") + p;
    return makeError(ErrorCode::Format, "the written " + what + " failed verification (not installed): " + all, target);
}

std::string VerifyReport::summary() const
{
    std::ostringstream o;
    o << path << ": " << format << ", " << (architecture.empty() ? "?" : architecture) << ", " << tensorCount
      << " tensors";
    if (format == "gguf") o << ", " << kvCount << " metadata keys";
    o << ", " << fileBytes << " bytes\n";
    std::map<std::string, int> types;
    std::int64_t nonFinite = 0;
    for (const auto& t : tensors) {
        ++types[t.type];
        nonFinite += t.nonFinite;
    }
    o << "  types:";
    for (const auto& [k, n] : types)
        o << ' ' << k << " x" << n;
    o << "\n  non-finite values: " << nonFinite << "\n";
    for (const auto& p : problems)
        o << "  problem: " << p << "\n";
    o << (ok ? "OK" : "FAILED") << "\n";
    return o.str();
}

} // namespace qb::exporting
