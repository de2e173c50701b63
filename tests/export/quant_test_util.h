#pragma once
// Shared helpers of the GPTQ / safetensors / .qbproj export tests: a quick quantize run on the
// demo model (tiny calibration: 8 windows of 64 tokens), grid lookups, an independent GPTQ
// unpacker (bit by bit, straight from FORMATS.md §5.2/5.3, sharing no code with the exporter),
// and the perplexity of an in-memory model with the export_test_util.h convention.

#include "export/safetensors_export.h"
#include "export_test_util.h"
#include "io/safetensors.h"
#include "pipeline/calibration.h"
#include "pipeline/quant_plan.h"
#include "pipeline/quantize_job.h"

#include <QDir>
#include <QFile>
#include <QtGlobal>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>

namespace qbtest {

struct QuickRun {
    qb::io::Checkpoint ck;
    qb::pipeline::QuantPlan plan;
    std::shared_ptr<qb::pipeline::QuantizeResult> result;
    std::map<std::string, qb::quant::StoredGridPtr> grids;
    qb::exporting::GridLookup lookup() const
    {
        return [this](const std::string& n) -> qb::quant::StoredGridPtr {
            auto it = grids.find(n);
            return it == grids.end() ? nullptr : it->second;
        };
    }
};

inline std::unique_ptr<QuickRun> quickQuantizePlan(const qb::pipeline::QuantPlan& plan)
{
    auto run = std::make_unique<QuickRun>();
    run->ck = demoCheckpoint();
    run->plan = plan;
    auto resolved = qb::pipeline::resolveQuantPlan(run->plan, run->ck.config);
    if (!resolved) qFatal("plan: %s", resolved.error().toString().c_str());
    auto text = qb::pipeline::readTextFile(demoDir() + "/calib.txt");
    if (!text) qFatal("calib text");
    qb::pipeline::CalibrationOptions co;
    co.nsamples = 8;
    co.seqlen = 64;
    auto calib = qb::pipeline::buildCalibrationSet(demoTokenizer(), *text, co);
    if (!calib) qFatal("calib: %s", calib.error().toString().c_str());
    auto base = qb::pipeline::loadModel(run->ck);
    if (!base) qFatal("load: %s", base.error().toString().c_str());
    auto q = qb::pipeline::runQuantize(**base, &run->ck, *resolved, *calib);
    if (!q) qFatal("quantize: %s", q.error().toString().c_str());
    run->result = std::make_shared<qb::pipeline::QuantizeResult>(std::move(*q));
    for (std::size_t i = 0; i < run->result->tensors.size(); ++i)
        if (run->result->codes[i]) run->grids[run->result->tensors[i].name] = run->result->codes[i];
    return run;
}

inline std::unique_ptr<QuickRun> quickQuantize(qb::quant::Method method, int bits, int group, bool sym = false)
{
    return quickQuantizePlan(
        qb::pipeline::uniformQuantPlan(method, bits, group, sym ? std::optional(true) : std::nullopt));
}

inline double modelPerplexity(const qb::model::Model& m)
{
    auto text = qb::pipeline::readTextFile(demoEvalText());
    qb::pipeline::PerplexityJobOptions o;
    o.ctx = kEvalCtx;
    auto r = qb::pipeline::runPerplexity(m, demoTokenizer(), *text, o);
    return r ? r->perplexity : qQNaN();
}

// Independent GPTQ v1 unpacker: W[n,k] = scales[g,n]·(q[k,n] − (stored zero + 1)), g = g_idx[k].
struct Unpacked {
    qb::quant::MatrixXfR w; // [N, K]
    std::vector<int> codes; // [N*K]
    std::vector<int> zeros; // [R*N]
};

inline std::uint32_t wordAt(const qb::TensorInfo& t, std::size_t i)
{
    const std::uint8_t* p = t.bytes.data() + 4 * i;
    return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}

// Value `index` of a b-bit LSB-first stream that starts at word `base` with `stride` between words.
inline int streamValue(const qb::TensorInfo& t, std::size_t base, std::size_t stride, int b, std::size_t index)
{
    int v = 0;
    for (int i = 0; i < b; ++i) {
        const std::size_t bit = std::size_t(b) * index + std::size_t(i);
        const std::uint32_t word = wordAt(t, base + (bit / 32) * stride);
        v |= int((word >> (bit % 32)) & 1u) << i;
    }
    return v;
}

inline Unpacked unpackGptq(const std::map<std::string, const qb::TensorInfo*>& by, const std::string& prefix, int b)
{
    const qb::TensorInfo& qw = *by.at(prefix + ".qweight");
    const qb::TensorInfo& qz = *by.at(prefix + ".qzeros");
    const qb::TensorInfo& sc = *by.at(prefix + ".scales");
    const qb::TensorInfo& gi = *by.at(prefix + ".g_idx");
    const std::size_t K = std::size_t(gi.shape[0]), N = std::size_t(qw.shape[1]), R = std::size_t(sc.shape[0]);
    Unpacked u;
    u.w.resize(Eigen::Index(N), Eigen::Index(K));
    u.codes.resize(N * K);
    u.zeros.resize(R * N);
    const std::size_t zWords = std::size_t(qz.shape[1]);
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t n = 0; n < N; ++n)
            u.zeros[r * N + n] = streamValue(qz, r * zWords, 1, b, n) + 1;
    for (std::size_t n = 0; n < N; ++n)
        for (std::size_t k = 0; k < K; ++k) {
            const int q = streamValue(qw, n, N, b, k);
            const auto g = std::size_t(std::int32_t(wordAt(gi, k)));
            const std::uint8_t* sp = sc.bytes.data() + 2 * (g * N + n);
            const double s = qb::f16ToF32(std::uint16_t(sp[0] | sp[1] << 8));
            u.codes[n * K + k] = q;
            u.w(Eigen::Index(n), Eigen::Index(k)) = float(s * double(q - u.zeros[g * N + n]));
        }
    return u;
}

inline QStringList leftoversIn(const QString& dir)
{
    return QDir(dir).entryList(QDir::AllEntries | QDir::Hidden | QDir::NoDotAndDotDot).filter(QStringLiteral(".tmp-"));
}

inline std::string slurpFile(const QString& path)
{
    QFile f(path);
    return f.open(QIODevice::ReadOnly) ? f.readAll().toStdString() : std::string();
}

// Min-max grids with group 32, F16 scales and v1-storable zeros on every decoder linear of a
// checkpoint: what a GPTQ export holds exactly.
struct SyntheticGrids {
    std::map<std::string, std::unique_ptr<qb::quant::QuantizedRows>> grids;
    qb::exporting::GridLookup lookup() const
    {
        return [this](const std::string& n) -> qb::quant::StoredGridPtr {
            auto it = grids.find(n);
            return it == grids.end() ? nullptr : qb::quant::storeGrid(*it->second);
        };
    }
};

inline SyntheticGrids makeGrids(const qb::io::Checkpoint& ck, std::function<int(const std::string&)> bitsOf, bool sym,
                                double zeroOffset = 0)
{
    SyntheticGrids s;
    for (const qb::TensorInfo& t : ck.tensors) {
        if (t.shape.size() != 2 || t.name.find("_proj") == std::string::npos) continue;
        const int bits = bitsOf(t.name);
        qb::quant::MatrixXfR w(t.shape[0], t.shape[1]);
        if (!qb::io::readTensorF32(t, w.data()).ok()) qFatal("read");
        const int g = 32, groups = int(w.cols()) / g;
        qb::quant::MatrixXdR scales(w.rows(), groups), zeros(w.rows(), groups);
        for (int r = 0; r < w.rows(); ++r)
            for (int k = 0; k < groups; ++k) {
                std::vector<double> seg(g);
                for (int j = 0; j < g; ++j)
                    seg[std::size_t(j)] = w(r, k * g + j);
                auto p = qb::quant::fitGroupMinMaxGptq(seg.data(), g, bits, sym);
                p.zero = std::clamp(p.zero, -double((1 << bits) - 1), -1.0) + zeroOffset; // v1-storable
                scales(r, k) = qb::f16ToF32(qb::f32ToF16(float(p.scale)));
                zeros(r, k) = p.zero;
            }
        auto q =
            qb::quant::quantizeRowsUniform(w, bits, scales, zeros, qb::quant::groupIndexContiguous(g, int(w.cols())));
        if (!q) qFatal("grid");
        s.grids[t.name] = std::make_unique<qb::quant::QuantizedRows>(std::move(*q));
    }
    return s;
}

} // namespace qbtest
