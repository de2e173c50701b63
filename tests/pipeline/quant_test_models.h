#pragma once
// Small synthetic LLaMA-style models and calibration sets for the quantize-job tests: random
// weights from a fixed seed, so every run sees the same numbers.

#include "model/model.h"
#include "pipeline/calibration.h"

#include <cstring>
#include <memory>
#include <random>

namespace qbtest {

inline qb::ModelConfig syntheticConfig(int layers = 2)
{
    qb::ModelConfig c;
    c.modelType = "llama";
    c.vocabSize = 64;
    c.hiddenSize = 32;
    c.intermediateSize = 48;
    c.numHiddenLayers = layers;
    c.numAttentionHeads = 2;
    c.numKeyValueHeads = 1;
    c.headDim = 16;
    c.maxPositionEmbeddings = 64;
    c.rmsNormEps = 1e-5;
    return c;
}

// Random weights for any config (biases where the config has them).
inline std::shared_ptr<qb::model::Model> syntheticModelFor(const qb::ModelConfig& c, unsigned seed = 7)
{
    const int layers = int(c.numHiddenLayers);
    auto m = std::make_shared<qb::model::Model>(c);
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.f, 1.f);
    auto fill = [&](auto& mat, float scale, float offset = 0.f) {
        for (Eigen::Index i = 0; i < mat.size(); ++i)
            mat.data()[i] = offset + scale * n(rng);
    };
    m->embedding().resize(c.vocabSize, c.hiddenSize);
    fill(m->embedding(), 1.0f);
    m->finalNorm().resize(c.hiddenSize);
    fill(m->finalNorm(), 0.05f, 1.f);
    m->lmHeadOwned().resize(c.vocabSize, c.hiddenSize);
    fill(m->lmHeadOwned(), 0.2f);
    for (int l = 0; l < layers; ++l) {
        auto w = std::make_shared<qb::model::DecoderLayerWeights>();
        w->allocate(c);
        fill(w->inputNorm, 0.1f, 1.f);
        fill(w->postNorm, 0.1f, 1.f);
        for (qb::model::Linear lin : qb::model::kAllLinears) {
            fill(w->weight(lin), 0.2f);
            fill(w->bias(lin), 0.1f);
        }
        m->setLayer(l, std::move(w));
    }
    return m;
}

inline std::shared_ptr<qb::model::Model> syntheticModel(int layers = 2, unsigned seed = 7)
{
    return syntheticModelFor(syntheticConfig(layers), seed);
}

inline qb::pipeline::CalibrationSet syntheticCalibration(int n = 4, int seqlen = 16, std::uint64_t seed = 1)
{
    std::vector<std::int32_t> tokens(512);
    std::mt19937 rng(3);
    for (auto& t : tokens)
        t = std::int32_t(rng() % 64);
    return qb::pipeline::sampleCalibrationWindows(tokens, {n, seqlen, seed}).value();
}

inline bool bitwiseEqual(const qb::model::RowMatrix& a, const qb::model::RowMatrix& b)
{
    return a.rows() == b.rows() && a.cols() == b.cols() &&
           std::memcmp(a.data(), b.data(), std::size_t(a.size()) * sizeof(float)) == 0;
}

} // namespace qbtest
