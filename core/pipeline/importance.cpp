#include "pipeline/importance.h"

#include "export/imatrix_writer.h"
#include "io/gguf_names.h"

#include <chrono>
#include <cmath>
#include <filesystem>

namespace qb::pipeline {

io::ImportanceMatrix importanceFromActivations(const ActivationReport& report, std::vector<std::string> datasets)
{
    io::ImportanceMatrix m;
    m.datasets = std::move(datasets);
    m.chunkCount = std::uint32_t(std::max(0, report.windows));
    m.chunkSize = std::uint32_t(std::max(0, report.seqlen));
    for (const auto& [key, stats] : report.taps) {
        if (stats.tokens() <= 0) continue;
        io::ImportanceEntry e;
        e.meanSquare = stats.channelMeanSquare();
        e.count = double(stats.tokens());
        for (model::Linear l : model::kAllLinears)
            if (model::linearKind(l) == key.second) m.entries[model::tensorName(key.first, l)] = e;
    }
    return m;
}

Status checkImportanceMatrix(const io::ImportanceMatrix& m, const ResolvedPlan& plan, const std::string& path)
{
    const std::string file = path.empty() ? std::string("the importance matrix") : path;
    for (const TensorPlan& tp : plan.tensors) {
        if (tp.skip) continue;
        const io::ImportanceEntry* e = m.find(tp.name);
        if (!e)
            return makeError(ErrorCode::InvalidArgument,
                             file + " has no entry for " + tp.name + " (GGUF name " + io::hfToGgufName(tp.name) + ")",
                             tp.name);
        if (Status st = io::validateImportanceEntry(tp.name, *e, tp.cols); !st.ok())
            return st.error().withContext(file);
    }
    return {};
}

Eigen::VectorXd importanceWeights(const io::ImportanceEntry& e)
{
    Eigen::VectorXd w(e.columns());
    for (Eigen::Index i = 0; i < w.size(); ++i)
        w[i] = e.count > 0 ? double(e.meanSquare[std::size_t(i)]) : 1.0;
    return w;
}

Result<ImportanceExportOutcome> exportImportanceMatrix(const ImportanceExportRequest& req, RunContext* ctx)
{
    const auto t0 = std::chrono::steady_clock::now();
    if (req.out.empty()) return makeError(ErrorCode::InvalidArgument, "importance matrix: no output path");
    ImportanceExportOutcome out;
    out.report = req.report;
    if (!out.report) {
        QB_TRY(r, calibrateActivations(req.calibrate, ctx));
        out.report = std::make_shared<const ActivationReport>(std::move(*r));
    }
    if (ctx) ctx->beginStage("write", 1, req.out);
    std::vector<std::string> datasets;
    if (!req.calibrate.calibration.textPath.empty())
        datasets.push_back(std::filesystem::path(req.calibrate.calibration.textPath).filename().string());
    const io::ImportanceMatrix m = importanceFromActivations(*out.report, std::move(datasets));
    if (m.entries.empty())
        return makeError(ErrorCode::InvalidArgument, "importance matrix: the calibration saw no tokens", req.out);
    QB_TRY_STATUS(exporting::writeImportanceMatrix(m, req.out, req.format, ctx));
    // Read back: what a loader sees must be what was meant, within the float rounding of sums.
    QB_TRY(back, io::readImportanceMatrix(req.out));
    if (back->entries.size() != m.entries.size())
        return makeError(ErrorCode::Internal,
                         "importance matrix: read back " + std::to_string(back->entries.size()) + " entries of " +
                             std::to_string(m.entries.size()),
                         req.out);
    for (const auto& [name, e] : m.entries) {
        const io::ImportanceEntry* b = back->find(name);
        bool same = b && b->meanSquare.size() == e.meanSquare.size();
        for (std::size_t i = 0; same && i < e.meanSquare.size(); ++i)
            same =
                std::abs(double(b->meanSquare[i]) - double(e.meanSquare[i])) <= 1e-5 * double(e.meanSquare[i]) + 1e-30;
        if (!same)
            return makeError(ErrorCode::Internal, "importance matrix: entry differs after reading it back",
                             req.out + ": entry " + name);
    }
    if (ctx) ctx->setDone(1);
    out.path = req.out;
    out.format = req.format;
    out.entries = int(m.entries.size());
    std::error_code ec;
    out.bytes = std::filesystem::file_size(req.out, ec);
    out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return out;
}

} // namespace qb::pipeline
