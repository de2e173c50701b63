#include "pipeline/ruquant_lab.h"

namespace qb::pipeline {

LabStageBuilder ruquantLabBuilder(const RuquantOptions& options, std::optional<double> smoothAlpha)
{
    return [options, smoothAlpha](const LabCapture& cap, RunContext* ctx) -> Result<std::vector<LabStage>> {
        if (ctx) ctx->setDetail("fitting RUQuant");
        if (cap.meanPerPosition.rows() < 1 || cap.meanPerPosition.cols() != cap.channels())
            return makeError(ErrorCode::InvalidArgument, "RUQuant in the lab: the capture holds no calibration signal");
        // The signal as the smoothed stages see it: the capture's statistics and weights, its rows
        // replaced by the per-position mean.
        LabCapture signalCap;
        signalCap.layer = cap.layer;
        signalCap.kind = cap.kind;
        signalCap.x = cap.meanPerPosition;
        signalCap.channelMaxAbs = cap.channelMaxAbs;
        signalCap.weights = cap.weights;
        LabStage smooth;
        smooth.label = "RUQuant signal";
        smooth.smoothAlpha = smoothAlpha;
        QB_TRY(signal, applyLabStage(signalCap, smooth));
        auto fit = fitRuquantTransform(*signal, options, ruquantGroupSeed(options.seed, cap.layer, cap.kind));
        if (!fit)
            return fit.error().withContext(std::string("RUQuant in the lab, layer ") + std::to_string(cap.layer) + " " +
                                           model::linearKindName(cap.kind));
        std::vector<LabStage> stages;
        LabStage stage;
        stage.smoothAlpha = smoothAlpha;
        for (std::size_t i = 0; i < fit->parts.size(); ++i) {
            stage.transforms.push_back(fit->parts[i]);
            stage.label = "RUQuant " + (i < fit->stageLabels.size() ? fit->stageLabels[i] : std::to_string(i + 1));
            stages.push_back(stage);
        }
        return stages;
    };
}

} // namespace qb::pipeline
