#include "pipeline/quantize_checkpoint.h"

#include "export/atomic_file.h"
#include "io/json_value.h"
#include "pipeline/quantize_job.h"
#include "quant/cmpq.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <sstream>
#include <type_traits>

namespace qb::pipeline {

namespace {

namespace fs = std::filesystem;

constexpr char kLayerMagic[8] = {'Q', 'B', 'C', 'K', 'L', 'A', 'Y', 'R'};
constexpr char kHiddenMagic[8] = {'Q', 'B', 'C', 'K', 'H', 'I', 'D', 'N'};
constexpr std::uint32_t kBinaryVersion = 1;
// 2: GPTQ solves in float (quant/gptq.h); a run resumed across that change would mix two solvers.
constexpr int kManifestVersion = 2;
constexpr const char* kFormatName = "quantbench-quantize-checkpoint";
constexpr const char* kManifestName = "manifest.json";

std::string layerFileName(int layer) { return "layer-" + std::to_string(layer) + ".bin"; }
std::string hiddenFileName(int next) { return "hidden-" + std::to_string(next) + ".bin"; }
std::string joinPath(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

std::string hex64(std::uint64_t v)
{
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
    return buf;
}

std::optional<std::uint64_t> parseHex64(const std::string& s)
{
    if (s.size() != 16) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : s) {
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return std::nullopt;
        v = (v << 4) | std::uint64_t(d);
    }
    return v;
}

// ---- binary writing ------------------------------------------------------------------------------

// Fields into an AtomicFileWriter, hashed as they go; finish() appends the checksum and commits.
class BinaryOut {
public:
    explicit BinaryOut(exporting::AtomicFileWriter w) : m_w(std::move(w)) {}

    Status bytes(const void* p, std::size_t n)
    {
        m_hash.update(p, n);
        return m_w.write(p, n);
    }
    template <class T>
    Status pod(T v)
    {
        static_assert(std::is_trivially_copyable_v<T>);
        return bytes(&v, sizeof v);
    }
    Status u64(std::uint64_t v) { return pod(v); }
    Status str(const std::string& s)
    {
        QB_TRY_STATUS(u64(s.size()));
        return bytes(s.data(), s.size());
    }
    template <class T>
    Status vec(const std::vector<T>& v)
    {
        QB_TRY_STATUS(u64(v.size()));
        return bytes(v.data(), v.size() * sizeof(T));
    }
    template <class M>
    Status matrix(const M& m)
    {
        QB_TRY_STATUS(u64(std::uint64_t(m.rows())));
        QB_TRY_STATUS(u64(std::uint64_t(m.cols())));
        return bytes(m.data(), std::size_t(m.size()) * sizeof(typename M::Scalar));
    }
    Status finish()
    {
        const std::uint64_t sum = m_hash.value();
        QB_TRY_STATUS(m_w.write(&sum, sizeof sum));
        return m_w.commit();
    }

private:
    exporting::AtomicFileWriter m_w;
    CheckpointHasher m_hash;
};

// ---- binary reading ------------------------------------------------------------------------------

// Reads a whole checkpoint file with bounds checks: every size is compared with the bytes left
// before anything is allocated, so a truncated or corrupt file is an error, never a crash.
class BinaryIn {
public:
    static Result<BinaryIn> open(const std::string& path)
    {
        std::FILE* f = std::fopen(path.c_str(), "rb");
        if (!f)
            return makeError(ErrorCode::Io, "cannot open checkpoint file: " + std::string(std::strerror(errno)), path);
        struct stat st{};
        if (::fstat(fileno(f), &st) != 0) {
            std::fclose(f);
            return makeError(ErrorCode::Io, "cannot stat checkpoint file", path);
        }
        BinaryIn in;
        in.m_file.reset(f);
        in.m_path = path;
        in.m_size = std::uint64_t(st.st_size);
        if (in.m_size < sizeof(std::uint64_t))
            return makeError(ErrorCode::Format,
                             "checkpoint file is truncated (" + std::to_string(in.m_size) + " bytes)", path);
        in.m_payload = in.m_size - sizeof(std::uint64_t);
        return in;
    }

    Status bytes(void* p, std::size_t n)
    {
        if (n > m_payload - m_pos) return truncated(n);
        if (n && std::fread(p, 1, n, m_file.get()) != n) return truncated(n);
        m_hash.update(p, n);
        m_pos += n;
        return {};
    }
    template <class T>
    Result<T> pod()
    {
        T v{};
        QB_TRY_STATUS(bytes(&v, sizeof v));
        return v;
    }
    Result<std::uint64_t> count(std::size_t elementBytes)
    {
        QB_TRY(n, pod<std::uint64_t>());
        if (elementBytes && *n > (m_payload - m_pos) / elementBytes) return truncated(*n * elementBytes);
        return *n;
    }
    Result<std::string> str()
    {
        QB_TRY(n, count(1));
        std::string s(std::size_t(*n), '\0');
        QB_TRY_STATUS(bytes(s.data(), s.size()));
        return s;
    }
    template <class T>
    Status vec(std::vector<T>& out)
    {
        QB_TRY(n, count(sizeof(T)));
        out.resize(std::size_t(*n));
        return bytes(out.data(), out.size() * sizeof(T));
    }
    template <class M>
    Status matrix(M& m)
    {
        QB_TRY(r, pod<std::uint64_t>());
        QB_TRY(c, pod<std::uint64_t>());
        const std::uint64_t left = (m_payload - m_pos) / sizeof(typename M::Scalar);
        if (*r > left || (*r && *c > left / *r)) return truncated(std::size_t(-1));
        m.resize(Eigen::Index(*r), Eigen::Index(*c));
        return bytes(m.data(), std::size_t(m.size()) * sizeof(typename M::Scalar));
    }
    // The stored checksum must follow the last field and match what was read.
    Status finish()
    {
        if (m_pos != m_payload)
            return makeError(
                ErrorCode::Format,
                "checkpoint file has " + std::to_string(m_payload - m_pos) + " unexpected bytes at the end", m_path);
        std::uint64_t sum = 0;
        if (std::fread(&sum, 1, sizeof sum, m_file.get()) != sizeof sum) return truncated(sizeof sum);
        if (sum != m_hash.value())
            return makeError(ErrorCode::Format, "checkpoint file is corrupt (checksum mismatch)", m_path);
        return {};
    }
    Status header(const char (&magic)[8], std::uint64_t fingerprint)
    {
        char m[8];
        QB_TRY_STATUS(bytes(m, sizeof m));
        if (std::memcmp(m, magic, sizeof m) != 0)
            return makeError(ErrorCode::Format, "not a quantize checkpoint file (bad magic)", m_path);
        QB_TRY(version, pod<std::uint32_t>());
        if (*version != kBinaryVersion)
            return makeError(ErrorCode::Unsupported,
                             "quantize checkpoint file version " + std::to_string(*version) + " (this build reads " +
                                 std::to_string(kBinaryVersion) + ")",
                             m_path);
        QB_TRY(fp, pod<std::uint64_t>());
        if (*fp != fingerprint)
            return makeError(ErrorCode::Format, "checkpoint file belongs to another run than its manifest", m_path);
        return {};
    }
    const std::string& path() const { return m_path; }

private:
    Error truncated(std::size_t wanted) const
    {
        return makeError(ErrorCode::Format,
                         "checkpoint file is truncated or corrupt: " +
                             (wanted == std::size_t(-1)
                                  ? std::string("a size field exceeds the file")
                                  : std::to_string(wanted) + " bytes needed at offset " + std::to_string(m_pos)) +
                             " (the file has " + std::to_string(m_size) + " bytes)",
                         m_path);
    }
    struct Closer {
        void operator()(std::FILE* f) const { std::fclose(f); }
    };
    std::unique_ptr<std::FILE, Closer> m_file;
    std::string m_path;
    std::uint64_t m_size = 0, m_payload = 0, m_pos = 0;
    CheckpointHasher m_hash;
};

// ---- grids and reports ---------------------------------------------------------------------------

Status writeReport(BinaryOut& o, const TensorReport& r)
{
    QB_TRY_STATUS(o.str(r.name));
    QB_TRY_STATUS(o.pod<std::int32_t>(r.layer));
    QB_TRY_STATUS(o.pod<std::int32_t>(std::int32_t(r.linear)));
    QB_TRY_STATUS(o.pod<std::uint8_t>(r.skipped));
    QB_TRY_STATUS(o.pod<std::int32_t>(std::int32_t(r.method)));
    QB_TRY_STATUS(o.pod<std::int32_t>(r.bits));
    QB_TRY_STATUS(o.pod<std::int32_t>(r.groupSize));
    QB_TRY_STATUS(o.pod<std::uint8_t>(r.sym));
    QB_TRY_STATUS(o.pod<std::uint8_t>(r.actOrder));
    QB_TRY_STATUS(o.str(r.target));
    for (double d : {r.bitsPerWeight, r.relativeError, r.proxyLoss, r.solverProxyLoss, r.searchSeconds, r.solveSeconds})
        QB_TRY_STATUS(o.pod(d));
    return o.pod<std::int32_t>(r.dampingRetries);
}

Result<TensorReport> readReport(BinaryIn& in)
{
    TensorReport r;
    QB_TRY(name, in.str());
    r.name = std::move(*name);
    QB_TRY(layer, in.pod<std::int32_t>());
    QB_TRY(linear, in.pod<std::int32_t>());
    QB_TRY(skipped, in.pod<std::uint8_t>());
    QB_TRY(method, in.pod<std::int32_t>());
    QB_TRY(bits, in.pod<std::int32_t>());
    QB_TRY(group, in.pod<std::int32_t>());
    QB_TRY(sym, in.pod<std::uint8_t>());
    QB_TRY(actOrder, in.pod<std::uint8_t>());
    QB_TRY(target, in.str());
    if (*linear < 0 || *linear >= int(model::kAllLinears.size()) || *method < 0 || *method > int(quant::Method::Cmpq))
        return makeError(ErrorCode::Format, "checkpoint file has a bad tensor report", in.path());
    r.layer = *layer;
    r.linear = model::Linear(*linear);
    r.skipped = *skipped != 0;
    r.method = quant::Method(*method);
    r.bits = *bits;
    r.groupSize = *group;
    r.sym = *sym != 0;
    r.actOrder = *actOrder != 0;
    r.target = std::move(*target);
    for (double* d :
         {&r.bitsPerWeight, &r.relativeError, &r.proxyLoss, &r.solverProxyLoss, &r.searchSeconds, &r.solveSeconds}) {
        QB_TRY(v, in.pod<double>());
        *d = *v;
    }
    QB_TRY(retries, in.pod<std::int32_t>());
    r.dampingRetries = *retries;
    return r;
}

Status writeGrid(BinaryOut& o, const quant::QuantizedRows& q)
{
    QB_TRY_STATUS(o.matrix(q.codes));
    QB_TRY_STATUS(o.matrix(q.scales));
    QB_TRY_STATUS(o.matrix(q.zeros));
    QB_TRY_STATUS(o.matrix(q.offsets));
    QB_TRY_STATUS(o.vec(q.groupIndex));
    QB_TRY_STATUS(o.str(q.container));
    QB_TRY_STATUS(o.matrix(q.superScales));
    QB_TRY_STATUS(o.pod<std::int32_t>(q.bits));
    QB_TRY_STATUS(o.pod(q.proxyLoss));
    QB_TRY_STATUS(o.pod<std::int32_t>(q.dampingRetries));
    QB_TRY_STATUS(o.pod<std::uint8_t>(q.cmpq != nullptr));
    if (!q.cmpq) return {};
    const quant::CmpqCodes& c = *q.cmpq;
    QB_TRY_STATUS(o.vec(c.channelBits));
    QB_TRY_STATUS(o.vec(c.codebookOffset));
    QB_TRY_STATUS(o.vec(c.codebook));
    QB_TRY_STATUS(o.vec(c.keptChannels));
    QB_TRY_STATUS(o.matrix(c.keptValues));
    QB_TRY_STATUS(o.vec(c.outlierIndex));
    QB_TRY_STATUS(o.vec(c.outlierValue));
    QB_TRY_STATUS(o.vec(c.channelScore));
    QB_TRY_STATUS(o.vec(c.levels));
    for (double d :
         {c.bits.codes, c.bits.codebooks, c.bits.keptChannels, c.bits.sparseOutliers, c.bits.tags, c.targetBits})
        QB_TRY_STATUS(o.pod(d));
    return {};
}

Result<quant::QuantizedRows> readGrid(BinaryIn& in)
{
    quant::QuantizedRows q;
    QB_TRY_STATUS(in.matrix(q.codes));
    QB_TRY_STATUS(in.matrix(q.scales));
    QB_TRY_STATUS(in.matrix(q.zeros));
    QB_TRY_STATUS(in.matrix(q.offsets));
    QB_TRY_STATUS(in.vec(q.groupIndex));
    QB_TRY(container, in.str());
    q.container = std::move(*container);
    QB_TRY_STATUS(in.matrix(q.superScales));
    QB_TRY(bits, in.pod<std::int32_t>());
    q.bits = *bits;
    QB_TRY(proxy, in.pod<double>());
    q.proxyLoss = *proxy;
    QB_TRY(retries, in.pod<std::int32_t>());
    q.dampingRetries = *retries;
    QB_TRY(hasCmpq, in.pod<std::uint8_t>());
    if (*hasCmpq) {
        auto c = std::make_shared<quant::CmpqCodes>();
        QB_TRY_STATUS(in.vec(c->channelBits));
        QB_TRY_STATUS(in.vec(c->codebookOffset));
        QB_TRY_STATUS(in.vec(c->codebook));
        QB_TRY_STATUS(in.vec(c->keptChannels));
        QB_TRY_STATUS(in.matrix(c->keptValues));
        QB_TRY_STATUS(in.vec(c->outlierIndex));
        QB_TRY_STATUS(in.vec(c->outlierValue));
        QB_TRY_STATUS(in.vec(c->channelScore));
        QB_TRY_STATUS(in.vec(c->levels));
        for (double* d : {&c->bits.codes, &c->bits.codebooks, &c->bits.keptChannels, &c->bits.sparseOutliers,
                          &c->bits.tags, &c->targetBits}) {
            QB_TRY(v, in.pod<double>());
            *d = *v;
        }
        Status valid = quant::validateCmpqCodes(q.codes, *c);
        if (!valid.ok()) return valid.error().withContext(in.path());
        q.cmpq = std::move(c);
    }
    return q;
}

// The weights a grid reconstructs, or nullopt when its parameters do not fit its codes (a corrupt
// file that passed the checksum is not expected, but must not index out of bounds).
// Shapes and indices that fit together, so that nothing reading the grid (the reconstruction here,
// an export later) indexes out of bounds.
bool gridConsistent(const quant::QuantizedRows& q)
{
    if (q.cmpq) return quant::validateCmpqCodes(q.codes, *q.cmpq).ok();
    const Eigen::Index rows = q.codes.rows(), cols = q.codes.cols();
    if (q.bits < 1 || q.bits > 8 || q.groupIndex.size() != std::size_t(cols) || q.scales.rows() != rows ||
        q.zeros.rows() != rows || q.zeros.cols() != q.scales.cols() ||
        (q.offsets.size() && (q.offsets.rows() != rows || q.offsets.cols() != q.scales.cols())))
        return false;
    for (int g : q.groupIndex)
        if (g < 0 || g >= q.scales.cols()) return false;
    return true;
}

std::optional<model::RowMatrix> gridWeights(const quant::QuantizedRows& q)
{
    if (!gridConsistent(q)) return std::nullopt;
    if (q.cmpq) return quant::dequantizeRowsCmpq(q.codes, *q.cmpq);
    return quant::dequantizeRowsUniform(q);
}

bool sameBits(const model::RowMatrix& a, const model::RowMatrix& b)
{
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           std::memcmp(a.data(), b.data(), std::size_t(a.size()) * sizeof(float)) == 0;
}

io::JsonValue manifestJson(const QuantizeCheckpointManifest& m)
{
    io::JsonValue fp;
    fp.set("model", hex64(m.fingerprint.model));
    fp.set("plan", hex64(m.fingerprint.plan));
    fp.set("calibration", hex64(m.fingerprint.calibration));
    fp.set("options", hex64(m.fingerprint.options));
    io::JsonValue opt;
    opt.set("batch", m.options.batch);
    opt.set("threads", m.options.threads);
    opt.set("keep_inputs_bytes", std::to_string(m.options.keepInputsBytes));
    opt.set("importance", hex64(m.options.importance));
    io::JsonValue o;
    o.set("format", kFormatName);
    o.set("version", kManifestVersion);
    o.set("layers", m.layers);
    o.set("done", m.done);
    o.set("hidden", hiddenFileName(m.done));
    o.set("hidden_rows", std::to_string(m.hiddenRows));
    o.set("hidden_cols", std::to_string(m.hiddenCols));
    o.set("fingerprint", std::move(fp));
    o.set("options", std::move(opt));
    return o;
}

Status writeTextAtomic(const std::string& path, const std::string& text)
{
    QB_TRY(w, exporting::AtomicFileWriter::open(path, text.size()));
    QB_TRY_STATUS(w->write(text.data(), text.size()));
    return w->commit();
}

void hashConfig(CheckpointHasher& h, const ModelConfig& c)
{
    h.add(int(c.architecture));
    h.addString(c.modelType);
    for (std::int64_t v : {c.vocabSize, c.hiddenSize, c.intermediateSize, c.numHiddenLayers, c.numAttentionHeads,
                           c.numKeyValueHeads, c.headDim, c.maxPositionEmbeddings, c.slidingWindow, c.bosTokenId,
                           c.eosTokenId, c.ropeScaling.originalMaxPositionEmbeddings})
        h.add(v);
    for (double v :
         {c.rmsNormEps, c.ropeTheta, c.ropeScaling.factor, c.ropeScaling.lowFreqFactor, c.ropeScaling.highFreqFactor,
          c.queryPreAttnScalar, c.attnLogitSoftcap, c.finalLogitSoftcap, c.ropeLocalTheta})
        h.add(v);
    h.addString(c.ropeScaling.type);
    for (bool b : {c.tieWordEmbeddings, c.attentionBias, c.attentionOutputBias, c.mlpBias, c.qkNorm, c.gemmaNorms,
                   c.fusedProjections})
        h.add(std::uint8_t(b));
    h.add(int(c.hiddenAct));
    h.add(std::uint64_t(c.slidingLayers.size()));
    for (bool b : c.slidingLayers)
        h.add(std::uint8_t(b));
}

template <class M>
void hashMatrix(CheckpointHasher& h, const M& m)
{
    h.add(std::int64_t(m.rows()));
    h.add(std::int64_t(m.cols()));
    h.update(m.data(), std::size_t(m.size()) * sizeof(typename M::Scalar));
}

} // namespace

// ---- hashing -------------------------------------------------------------------------------------

void CheckpointHasher::mix(std::uint64_t word)
{
    m_h ^= word;
    m_h *= 0x100000001b3ull;
    m_h ^= m_h >> 29;
}

void CheckpointHasher::update(const void* data, std::size_t n)
{
    const auto* p = static_cast<const unsigned char*>(data);
    m_total += n;
    while (n && m_pendingBytes) { // finish a partial word first
        m_pending |= std::uint64_t(*p++) << (8 * m_pendingBytes);
        --n;
        if (++m_pendingBytes == 8) {
            mix(m_pending);
            m_pending = 0;
            m_pendingBytes = 0;
        }
    }
    for (; n >= 8; n -= 8, p += 8) {
        std::uint64_t w;
        std::memcpy(&w, p, 8);
        mix(w);
    }
    for (; n; --n)
        m_pending |= std::uint64_t(*p++) << (8 * m_pendingBytes++);
}

void CheckpointHasher::addString(const std::string& s)
{
    add(std::uint64_t(s.size()));
    update(s.data(), s.size());
}

std::uint64_t CheckpointHasher::value() const
{
    std::uint64_t h = m_h;
    h ^= m_pending;
    h *= 0x100000001b3ull;
    h ^= m_total;
    h *= 0xff51afd7ed558ccdull; // murmur3's finaliser spreads the last words over every bit
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

std::uint64_t QuantizeFingerprint::combined() const
{
    CheckpointHasher h;
    h.add(model);
    h.add(plan);
    h.add(calibration);
    h.add(options);
    return h.value();
}

std::uint64_t fingerprintModel(const model::Model& base, const io::Checkpoint* checkpoint)
{
    CheckpointHasher h;
    hashConfig(h, base.config());
    if (checkpoint) {
        // What the files say, and the files themselves by size and modification time: cheap,
        // and a rewritten model (even of the same shape) is told apart.
        h.add(int(checkpoint->format));
        h.addString(checkpoint->quantization);
        for (const TensorInfo& t : checkpoint->tensors) {
            h.addString(t.name);
            h.add(std::uint64_t(t.shape.size()));
            for (std::int64_t d : t.shape)
                h.add(d);
            h.add(int(t.dtype));
            h.add(t.ggmlType);
        }
        for (const std::string& f : checkpoint->files) {
            h.addString(fs::path(f).filename().string());
            struct stat st{};
            if (::stat(f.c_str(), &st) == 0) {
                h.add(std::int64_t(st.st_size));
                h.add(std::int64_t(st.st_mtim.tv_sec));
                h.add(std::int64_t(st.st_mtim.tv_nsec));
            }
        }
        return h.value();
    }
    // An in-memory model: its bytes (the demo and test models are small).
    hashMatrix(h, base.embedding());
    hashMatrix(h, base.finalNorm());
    hashMatrix(h, base.lmHead());
    for (int l = 0; l < base.numLayers(); ++l) {
        auto w = base.layer(l);
        h.add(std::uint8_t(w != nullptr));
        if (!w) continue;
        for (const model::RowVector* v :
             {&w->inputNorm, &w->postNorm, &w->qNorm, &w->kNorm, &w->attnOutNorm, &w->mlpOutNorm, &w->qBias, &w->kBias,
              &w->vBias, &w->oBias, &w->gateBias, &w->upBias, &w->downBias})
            hashMatrix(h, *v);
        for (model::Linear lin : model::kAllLinears)
            hashMatrix(h, w->weight(lin));
        h.add(std::uint8_t(w->runtime != nullptr));
    }
    return h.value();
}

std::uint64_t fingerprintPlan(const ResolvedPlan& plan)
{
    CheckpointHasher h;
    h.add(std::uint64_t(plan.tensors.size()));
    for (const TensorPlan& t : plan.tensors) {
        h.addString(t.name);
        h.add(t.layer);
        h.add(int(t.linear));
        h.add(t.rows);
        h.add(t.cols);
        h.add(std::uint8_t(t.skip));
        h.add(int(t.method));
        const quant::GptqOptions& o = t.options;
        h.add(o.grid.bits);
        h.add(o.grid.groupSize);
        h.add(std::uint8_t(o.grid.sym));
        h.add(std::uint8_t(o.grid.gptqStorage));
        h.add(o.grid.clip);
        h.add(int(o.init));
        h.add(int(o.groups));
        h.add(std::uint8_t(o.actOrder));
        h.add(o.blockSize);
        h.add(o.damping);
        h.add(o.maxDampingRetries);
        h.add(o.neuqi.coarseSteps);
        h.add(o.neuqi.totalSteps);
        h.add(std::uint8_t(o.neuqi.minMaxGuard));
        const quant::CmpqOptions& c = t.cmpq;
        h.add(c.bits);
        h.add(std::uint64_t(c.levels.size()));
        for (int l : c.levels)
            h.add(l);
        h.add(int(c.score));
        h.add(int(c.weights));
        h.add(std::uint8_t(c.uniformLevels));
        h.add(c.actOutliers);
        h.add(c.quantOutliers);
        h.add(std::uint8_t(c.errorFeedback));
        h.add(std::uint8_t(c.staticCodebooks));
        h.add(c.kmeansIters);
        h.add(c.kmeansTol);
        h.add(c.blockSize);
        h.add(c.damping);
        h.add(c.maxDampingRetries);
        h.add(t.bitsPerWeight);
        h.addString(t.target);
    }
    h.addString(plan.embedType);
    h.addString(plan.headType);
    io::JsonValue act;
    writeActivationPlan(act, plan.activation);
    h.addString(io::toJsonText(act, -1));
    const RuquantPlanOptions& r = plan.activation.ruquant;
    for (int v : {r.blockSize, r.householderSteps, r.givensRounds, r.permutationRounds, r.finetuneEpochs})
        h.add(v);
    h.add(std::uint8_t(r.repoGivens));
    h.add(r.finetuneLr);
    h.add(plan.activation.seed);
    return h.value();
}

std::uint64_t fingerprintCalibration(const CalibrationSet& calib)
{
    CheckpointHasher h;
    h.add(calib.seqlen);
    h.add(calib.count);
    h.add(std::uint64_t(calib.ids.size()));
    h.update(calib.ids.data(), calib.ids.size() * sizeof(std::int32_t));
    return h.value();
}

std::uint64_t fingerprintImportance(const io::ImportanceMatrix* importance)
{
    if (!importance) return 0;
    CheckpointHasher h;
    for (const auto& [name, e] : importance->entries) {
        h.addString(name);
        h.add(std::uint64_t(e.meanSquare.size()));
        h.update(e.meanSquare.data(), e.meanSquare.size() * sizeof(float));
        h.add(std::uint64_t(e.mean.size()));
        h.update(e.mean.data(), e.mean.size() * sizeof(float));
        h.add(e.count);
    }
    return h.value() | 1; // never 0 ("none")
}

std::uint64_t fingerprintOptions(const QuantizeNumericOptions& o)
{
    CheckpointHasher h;
    h.add(o.batch);
    h.add(o.threads);
    h.add(o.keepInputsBytes);
    h.add(o.importance);
    return h.value();
}

// ---- manifest ------------------------------------------------------------------------------------

Result<std::optional<QuantizeCheckpointManifest>> readQuantizeCheckpointManifest(const std::string& dir)
{
    const std::string path = joinPath(dir, kManifestName);
    std::error_code ec;
    if (!fs::exists(path, ec)) return std::optional<QuantizeCheckpointManifest>();
    std::ifstream f(path, std::ios::binary);
    if (!f) return makeError(ErrorCode::Io, "cannot read the quantize checkpoint manifest", path);
    std::stringstream ss;
    ss << f.rdbuf();
    QB_TRY(json, io::parseJson(ss.str(), path));
    auto bad = [&](const std::string& what) {
        return makeError(ErrorCode::Format, "quantize checkpoint manifest: " + what, path);
    };
    const io::JsonValue* format = json->find("format");
    if (!format || !format->isString() || format->asString() != kFormatName) return bad("not a quantize checkpoint");
    const io::JsonValue* version = json->find("version");
    if (!version || !version->isInteger()) return bad("no version");
    if (version->asInteger() != kManifestVersion)
        return makeError(ErrorCode::Unsupported,
                         "quantize checkpoint version " + std::to_string(version->asInteger()) + " (this build reads " +
                             std::to_string(kManifestVersion) + ")",
                         path);
    auto integer = [&](const io::JsonValue& o, const char* key) -> std::optional<std::int64_t> {
        const io::JsonValue* v = o.find(key);
        if (v && v->isInteger()) return v->asInteger();
        if (v && v->isString()) {
            char* end = nullptr;
            const long long x = std::strtoll(v->asString().c_str(), &end, 10);
            if (end && *end == 0 && !v->asString().empty()) return std::int64_t(x);
        }
        return std::nullopt;
    };
    auto hex = [&](const io::JsonValue* o, const char* key) -> std::optional<std::uint64_t> {
        const io::JsonValue* v = o ? o->find(key) : nullptr;
        if (!v || !v->isString()) return std::nullopt;
        return parseHex64(v->asString());
    };
    QuantizeCheckpointManifest m;
    const auto layers = integer(*json, "layers"), done = integer(*json, "done");
    const auto rows = integer(*json, "hidden_rows"), cols = integer(*json, "hidden_cols");
    if (!layers || !done || !rows || !cols || *layers < 1 || *done < 1 || *done > *layers || *rows < 1 || *cols < 1)
        return bad("bad or missing layers/done/hidden_rows/hidden_cols");
    m.layers = int(*layers);
    m.done = int(*done);
    m.hiddenRows = *rows;
    m.hiddenCols = *cols;
    const io::JsonValue* fp = json->find("fingerprint");
    const auto fm = hex(fp, "model"), fpl = hex(fp, "plan"), fc = hex(fp, "calibration"), fo = hex(fp, "options");
    if (!fm || !fpl || !fc || !fo) return bad("bad or missing fingerprint");
    m.fingerprint = {*fm, *fpl, *fc, *fo};
    const io::JsonValue* opt = json->find("options");
    if (!opt || !opt->isObject()) return bad("no options");
    const auto batch = integer(*opt, "batch"), threads = integer(*opt, "threads");
    const auto keep = integer(*opt, "keep_inputs_bytes");
    const auto imp = hex(opt, "importance");
    if (!batch || !threads || !keep || !imp) return bad("bad or missing options");
    m.options = {int(*batch), int(*threads), *keep, *imp};
    return std::optional(m);
}

Status checkQuantizeCheckpoint(const std::string& dir, const QuantizeCheckpointManifest& stored,
                               const QuantizeCheckpointManifest& now)
{
    std::vector<std::string> differs;
    if (stored.fingerprint.model != now.fingerprint.model || stored.layers != now.layers)
        differs.push_back("the model (its config, tensors or files changed)");
    if (stored.fingerprint.plan != now.fingerprint.plan) differs.push_back("the plan");
    if (stored.fingerprint.calibration != now.fingerprint.calibration)
        differs.push_back("the calibration (text, windows, length or seed)");
    const QuantizeNumericOptions &a = stored.options, &b = now.options;
    if (a.batch != b.batch)
        differs.push_back("--batch (" + std::to_string(a.batch) + " in the checkpoint, " + std::to_string(b.batch) +
                          " now)");
    if (a.threads != b.threads)
        differs.push_back("the thread count (" + std::to_string(a.threads) + " in the checkpoint, " +
                          std::to_string(b.threads) + " now: pass --threads " + std::to_string(a.threads) + ")");
    if (a.keepInputsBytes != b.keepInputsBytes) differs.push_back("the kept-inputs limit");
    if (a.importance != b.importance) differs.push_back("the importance matrix");
    if (differs.empty() && stored.fingerprint.options != now.fingerprint.options) differs.push_back("the options");
    if (differs.empty()) {
        if (stored.hiddenCols != now.hiddenCols || stored.hiddenRows != now.hiddenRows)
            return makeError(ErrorCode::Format, "quantize checkpoint: the hidden-state size does not fit the run", dir);
        return {};
    }
    std::string list;
    for (std::size_t i = 0; i < differs.size(); ++i)
        list += (i ? (i + 1 == differs.size() ? " and " : ", ") : "") + differs[i];
    return makeError(ErrorCode::InvalidArgument,
                     "the checkpoint in " + dir + " is from another run: " + list +
                         (differs.size() == 1 ? " differs" : " differ") +
                         "; resume with the same model, plan, calibration and options, or remove it to start over",
                     dir);
}

// ---- layers and hidden states --------------------------------------------------------------------

Status saveQuantizeCheckpointLayer(const std::string& dir, const QuantizeCheckpointManifest& manifest,
                                   const CheckpointLayer& layer, const model::RowMatrix& hidden)
{
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return makeError(ErrorCode::Io, "cannot create the checkpoint directory: " + ec.message(), dir);
    const std::uint64_t fp = manifest.fingerprint.combined();
    { // layer-<l>.bin
        std::uint64_t expected = 1024;
        for (const CheckpointTensor& t : layer.tensors) {
            if (t.grid) expected += std::uint64_t(t.grid->codes.size()) + 16 * std::uint64_t(t.grid->scales.size());
            expected += std::uint64_t(t.weight.size()) * sizeof(float);
        }
        QB_TRY(w, exporting::AtomicFileWriter::open(joinPath(dir, layerFileName(layer.layer)), expected));
        BinaryOut o(std::move(*w));
        QB_TRY_STATUS(o.bytes(kLayerMagic, sizeof kLayerMagic));
        QB_TRY_STATUS(o.pod(kBinaryVersion));
        QB_TRY_STATUS(o.u64(fp));
        QB_TRY_STATUS(o.pod<std::int32_t>(layer.layer));
        QB_TRY_STATUS(o.u64(layer.reports.size()));
        for (const TensorReport& r : layer.reports)
            QB_TRY_STATUS(writeReport(o, r));
        QB_TRY_STATUS(o.u64(layer.tensors.size()));
        for (const CheckpointTensor& t : layer.tensors) {
            QB_TRY_STATUS(o.u64(t.planIndex));
            QB_TRY_STATUS(o.pod<std::uint8_t>(t.grid.has_value()));
            if (t.grid) QB_TRY_STATUS(writeGrid(o, *t.grid));
            // The weights only when the grid does not give them back bit for bit.
            const std::optional<model::RowMatrix> rebuilt = t.grid ? gridWeights(*t.grid) : std::nullopt;
            const bool fromGrid = rebuilt && sameBits(*rebuilt, t.weight);
            QB_TRY_STATUS(o.pod<std::uint8_t>(fromGrid));
            if (!fromGrid) QB_TRY_STATUS(o.matrix(t.weight));
        }
        QB_TRY_STATUS(o.finish());
    }
    const std::string hiddenName = hiddenFileName(layer.layer + 1);
    { // hidden-<l+1>.bin
        QB_TRY(w, exporting::AtomicFileWriter::open(joinPath(dir, hiddenName),
                                                    std::uint64_t(hidden.size()) * sizeof(float) + 64));
        BinaryOut o(std::move(*w));
        QB_TRY_STATUS(o.bytes(kHiddenMagic, sizeof kHiddenMagic));
        QB_TRY_STATUS(o.pod(kBinaryVersion));
        QB_TRY_STATUS(o.u64(fp));
        QB_TRY_STATUS(o.pod<std::int32_t>(layer.layer + 1));
        QB_TRY_STATUS(o.matrix(hidden));
        QB_TRY_STATUS(o.finish());
    }
    QuantizeCheckpointManifest m = manifest;
    m.done = layer.layer + 1;
    m.hiddenRows = hidden.rows();
    m.hiddenCols = hidden.cols();
    QB_TRY_STATUS(writeTextAtomic(joinPath(dir, kManifestName), io::toJsonText(manifestJson(m)) + "\n"));
    // Only now is the older hidden-state file unreferenced.
    fs::remove(joinPath(dir, hiddenFileName(layer.layer)), ec);
    return {};
}

Result<CheckpointLayer> readQuantizeCheckpointLayer(const std::string& dir, const QuantizeCheckpointManifest& manifest,
                                                    int layer, const ResolvedPlan& plan)
{
    QB_TRY(in, BinaryIn::open(joinPath(dir, layerFileName(layer))));
    QB_TRY_STATUS(in->header(kLayerMagic, manifest.fingerprint.combined()));
    auto bad = [&](const std::string& what) { return makeError(ErrorCode::Format, what, in->path()); };
    QB_TRY(index, in->pod<std::int32_t>());
    if (*index != layer) return bad("checkpoint file holds layer " + std::to_string(*index));
    CheckpointLayer out;
    out.layer = layer;
    const std::size_t planBase = std::size_t(layer) * model::kAllLinears.size();
    QB_TRY(nReports, in->count(1));
    if (*nReports != model::kAllLinears.size()) return bad("checkpoint file has a wrong number of reports");
    for (std::uint64_t i = 0; i < *nReports; ++i) {
        QB_TRY(r, readReport(*in));
        if (r->name != plan.tensors[planBase + i].name) return bad("checkpoint report is for " + r->name);
        out.reports.push_back(std::move(*r));
    }
    QB_TRY(nTensors, in->count(1));
    if (*nTensors > model::kAllLinears.size()) return bad("checkpoint file has too many tensors");
    for (std::uint64_t i = 0; i < *nTensors; ++i) {
        CheckpointTensor t;
        QB_TRY(idx, in->pod<std::uint64_t>());
        if (*idx < planBase || *idx >= planBase + model::kAllLinears.size())
            return bad("checkpoint tensor index " + std::to_string(*idx) + " is outside layer " +
                       std::to_string(layer));
        t.planIndex = std::size_t(*idx);
        const TensorPlan& tp = plan.tensors[t.planIndex];
        QB_TRY(hasGrid, in->pod<std::uint8_t>());
        if (*hasGrid) {
            QB_TRY(g, readGrid(*in));
            if (g->codes.rows() != tp.rows || g->codes.cols() != tp.cols || !gridConsistent(*g))
                return bad("checkpoint grid of " + tp.name + " has the wrong shape or is inconsistent");
            t.grid = std::move(*g);
        }
        QB_TRY(fromGrid, in->pod<std::uint8_t>());
        if (*fromGrid) {
            std::optional<model::RowMatrix> w = t.grid ? gridWeights(*t.grid) : std::nullopt;
            if (!w) return bad("checkpoint grid of " + tp.name + " is inconsistent");
            t.weight = std::move(*w);
        } else {
            QB_TRY_STATUS(in->matrix(t.weight));
        }
        if (t.weight.rows() != tp.rows || t.weight.cols() != tp.cols)
            return bad("checkpoint weights of " + tp.name + " have the wrong shape");
        out.tensors.push_back(std::move(t));
    }
    QB_TRY_STATUS(in->finish());
    return out;
}

Result<model::RowMatrix> readQuantizeCheckpointHidden(const std::string& dir,
                                                      const QuantizeCheckpointManifest& manifest)
{
    QB_TRY(in, BinaryIn::open(joinPath(dir, hiddenFileName(manifest.done))));
    QB_TRY_STATUS(in->header(kHiddenMagic, manifest.fingerprint.combined()));
    QB_TRY(next, in->pod<std::int32_t>());
    if (*next != manifest.done)
        return makeError(ErrorCode::Format, "hidden-state file is for layer " + std::to_string(*next), in->path());
    model::RowMatrix h;
    QB_TRY_STATUS(in->matrix(h));
    if (h.rows() != manifest.hiddenRows || h.cols() != manifest.hiddenCols)
        return makeError(ErrorCode::Format, "hidden-state file has the wrong shape", in->path());
    QB_TRY_STATUS(in->finish());
    return h;
}

Status removeQuantizeCheckpoint(const std::string& dir)
{
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return {};
    // Never a manifest.json of something else (a directory the user chose may hold one).
    const std::string manifest = joinPath(dir, kManifestName);
    if (fs::exists(manifest, ec)) {
        std::ifstream f(manifest, std::ios::binary);
        std::stringstream ss;
        ss << f.rdbuf();
        if (ss.str().find(kFormatName) == std::string::npos)
            return makeError(ErrorCode::InvalidArgument,
                             "the directory holds a manifest.json that is not a quantize checkpoint's: choose "
                             "another checkpoint directory",
                             manifest);
    }
    // The manifest first: a half-removed checkpoint is then no checkpoint at all.
    fs::remove(manifest, ec);
    if (ec) return makeError(ErrorCode::Io, "cannot remove the checkpoint manifest: " + ec.message(), dir);
    std::vector<fs::path> ours;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        const std::string name = e.path().filename().string();
        const bool layer = name.rfind("layer-", 0) == 0, hidden = name.rfind("hidden-", 0) == 0;
        if ((layer || hidden) && e.path().extension() == ".bin") ours.push_back(e.path());
        // Temporaries of writes that a kill interrupted (AtomicFileWriter: ".<name>.tmp-XXXXXX").
        const bool temp = name.find(".tmp-") != std::string::npos &&
                          (name.rfind(".layer-", 0) == 0 || name.rfind(".hidden-", 0) == 0 ||
                           name.rfind(std::string(".") + kManifestName, 0) == 0);
        if (temp) ours.push_back(e.path());
    }
    for (const fs::path& p : ours)
        fs::remove(p, ec);
    if (fs::is_empty(dir, ec)) fs::remove(dir, ec);
    return {};
}

} // namespace qb::pipeline
