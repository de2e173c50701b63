#include "export/hf_directory.h"

#include "export/atomic_file.h"

#include <cerrno>
#include <fcntl.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

namespace qb::exporting {

namespace fs = std::filesystem;

namespace {

std::string stripSlashes(std::string p)
{
    while (p.size() > 1 && p.back() == '/')
        p.pop_back();
    return p;
}

} // namespace

StagingDirectory::StagingDirectory(StagingDirectory&& o) noexcept { *this = std::move(o); }

StagingDirectory& StagingDirectory::operator=(StagingDirectory&& o) noexcept
{
    if (this != &o) {
        discard();
        m_target = std::move(o.m_target);
        m_path = std::exchange(o.m_path, std::string());
    }
    return *this;
}

StagingDirectory::~StagingDirectory() { discard(); }

void StagingDirectory::discard()
{
    if (m_path.empty()) return;
    std::error_code ec;
    fs::remove_all(m_path, ec);
    m_path.clear();
}

Result<StagingDirectory> StagingDirectory::create(const std::string& target, std::uint64_t expectedBytes)
{
    const std::string t = stripSlashes(target);
    if (t.empty() || t == "/") return makeError(ErrorCode::InvalidArgument, "output path names no directory", target);
    const fs::path tp(t);
    const std::string parent = tp.has_parent_path() ? tp.parent_path().string() : ".";
    std::error_code ec;
    if (!fs::is_directory(parent, ec)) return makeError(ErrorCode::Io, "the parent directory does not exist", parent);
    if (fs::exists(tp, ec) && !fs::is_directory(tp, ec))
        return makeError(ErrorCode::InvalidArgument, "the target exists and is not a directory", t);
    QB_TRY_STATUS(checkDiskSpace(parent, expectedBytes));
    std::string templ = parent + "/.tmp-" + tp.filename().string() + "-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data()))
        return makeError(ErrorCode::Io, std::string("cannot create a staging directory: ") + std::strerror(errno),
                         parent);
    StagingDirectory s;
    s.m_target = t;
    s.m_path = buf.data();
    return s;
}

Status StagingDirectory::install()
{
    if (m_path.empty()) return makeError(ErrorCode::Internal, "staging directory already installed or discarded");
    std::error_code ec;
    if (fs::exists(m_target, ec)) {
#ifdef RENAME_EXCHANGE
        if (::renameat2(AT_FDCWD, m_path.c_str(), AT_FDCWD, m_target.c_str(), RENAME_EXCHANGE) == 0) {
            fs::remove_all(m_path, ec); // now holds the old target
            m_path.clear();
            return {};
        }
#endif
        const std::string aside = m_path + ".old";
        if (std::rename(m_target.c_str(), aside.c_str()) != 0)
            return makeError(ErrorCode::Io, std::string("cannot move the old target aside: ") + std::strerror(errno),
                             m_target);
        if (std::rename(m_path.c_str(), m_target.c_str()) != 0) {
            const int err = errno;
            std::rename(aside.c_str(), m_target.c_str());
            return makeError(ErrorCode::Io, std::string("cannot install the export: ") + std::strerror(err), m_target);
        }
        fs::remove_all(aside, ec);
        m_path.clear();
        return {};
    }
    if (std::rename(m_path.c_str(), m_target.c_str()) != 0)
        return makeError(ErrorCode::Io, std::string("cannot install the export: ") + std::strerror(errno), m_target);
    m_path.clear();
    return {};
}

std::string checkpointDirectory(const io::Checkpoint& ck)
{
    const std::string p = stripSlashes(ck.path);
    std::error_code ec;
    if (fs::is_directory(p, ec)) return p;
    const fs::path fp(p);
    return fp.has_parent_path() ? fp.parent_path().string() : ".";
}

Status writeSmallFile(const std::string& path, const std::string& bytes)
{
    QB_TRY(w, AtomicFileWriter::open(path, bytes.size()));
    QB_TRY_STATUS(w->write(bytes.data(), bytes.size()));
    return w->commit();
}

Result<std::string> readSmallFile(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in) return makeError(ErrorCode::Io, "cannot open", path);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

Result<std::vector<std::string>> copyTokenizerFiles(const std::string& srcDir, const std::string& dstDir)
{
    static const char* kNames[] = {
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
        "merges.txt",     "added_tokens.json",     "generation_config.json"};
    std::vector<std::string> copied;
    for (const char* n : kNames) {
        const std::string src = srcDir + "/" + n;
        std::error_code ec;
        if (!fs::is_regular_file(src, ec)) continue;
        QB_TRY(bytes, readSmallFile(src));
        QB_TRY_STATUS(writeSmallFile(dstDir + "/" + n, *bytes));
        copied.push_back(n);
    }
    return copied;
}

Result<io::JsonValue> sourceConfigJson(const io::Checkpoint& ck)
{
    const std::string path = checkpointDirectory(ck) + "/config.json";
    std::error_code ec;
    if (ck.format != io::CheckpointFormat::Gguf && fs::is_regular_file(path, ec)) {
        QB_TRY(text, readSmallFile(path));
        QB_TRY(j, io::parseJson(*text, path));
        if (!j->isObject()) return makeError(ErrorCode::Format, "config.json is not an object", path);
        // A model written from memory may have untied its head (a rotated run: pipeline's
        // checkpointOverModel); the file's config must say so, or loaders tie it back.
        if (const io::JsonValue* t = j->find("tie_word_embeddings");
            !ck.config.tieWordEmbeddings && t && t->isBool() && t->asBool())
            j->set("tie_word_embeddings", false);
        return *j;
    }
    const ModelConfig& c = ck.config;
    const bool qwen = c.architecture == Architecture::Qwen2;
    const bool gemma = c.gemmaNorms;
    io::JsonValue j;
    j.set("architectures", io::JsonArray{io::JsonValue(architectureName(c.architecture))});
    j.set("model_type", c.modelType.empty() ? std::string(qwen ? "qwen2" : "llama") : c.modelType);
    j.set("vocab_size", c.vocabSize);
    j.set("hidden_size", c.hiddenSize);
    j.set("intermediate_size", c.intermediateSize);
    j.set("num_hidden_layers", c.numHiddenLayers);
    j.set("num_attention_heads", c.numAttentionHeads);
    j.set("num_key_value_heads", c.numKeyValueHeads);
    j.set("head_dim", c.headDim);
    j.set("max_position_embeddings", c.maxPositionEmbeddings);
    j.set("rms_norm_eps", c.rmsNormEps);
    j.set("rope_theta", c.ropeTheta);
    j.set("tie_word_embeddings", c.tieWordEmbeddings);
    j.set(gemma ? "hidden_activation" : "hidden_act", gemma ? "gelu_pytorch_tanh" : "silu");
    if (!qwen) j.set("attention_bias", c.attentionBias);
    if (c.ropeScaling.type == "linear") {
        io::JsonValue rs;
        rs.set("rope_type", "linear");
        rs.set("factor", c.ropeScaling.factor);
        j.set("rope_scaling", rs);
    }
    if (gemma) {
        j.set("query_pre_attn_scalar", c.queryPreAttnScalar > 0 ? c.queryPreAttnScalar : double(c.headDim));
        if (c.attnLogitSoftcap > 0) j.set("attn_logit_softcapping", c.attnLogitSoftcap);
        if (c.finalLogitSoftcap > 0) j.set("final_logit_softcapping", c.finalLogitSoftcap);
        if (c.ropeLocalTheta > 0) j.set("rope_local_base_freq", c.ropeLocalTheta);
    }
    if (c.slidingWindow > 0) {
        j.set("sliding_window", c.slidingWindow);
        io::JsonArray types;
        for (bool s : c.slidingLayers)
            types.push_back(io::JsonValue(s ? "sliding_attention" : "full_attention"));
        j.set("layer_types", types);
        if (c.architecture == Architecture::Qwen2 || c.architecture == Architecture::Qwen3) {
            j.set("use_sliding_window", true);
            j.set("max_window_layers", std::int64_t(0));
        }
    }
    if (c.bosTokenId >= 0) j.set("bos_token_id", c.bosTokenId);
    if (c.eosTokenId >= 0) j.set("eos_token_id", c.eosTokenId);
    return j;
}

} // namespace qb::exporting
