#include "pipeline/ruquant_finetune.h"

#include "pipeline/ruquant.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace qb::pipeline {

using model::LinearKind;
using model::RowMatrix;

namespace {

constexpr LinearKind kKinds[] = {LinearKind::Qkv, LinearKind::O, LinearKind::GateUp, LinearKind::Down};
constexpr double kOmegaGuard = 1e-2;

Eigen::VectorXf unitOf(const Eigen::VectorXd& omega) { return (omega / omega.norm()).cast<float>(); }

// rows <- rows − 2 (rows·u) uᵀ
void reflect(RowMatrix& rows, const Eigen::VectorXf& u)
{
    const Eigen::VectorXf d = 2.0f * (rows * u);
    rows.noalias() -= d * u.transpose();
}

// ∂L/∂u += −2 (zᵀ(g·u) + gᵀ(z·u)) for rows z before the reflection and g the gradient after it.
void addReflectionGrad(const RowMatrix& z, const RowMatrix& g, const Eigen::VectorXf& u, Eigen::VectorXd& du)
{
    const Eigen::VectorXf a = z * u, b = g * u;
    du -= 2.0 * (z.transpose() * b + g.transpose() * a).cast<double>();
}

// One forward (+ backward) pass of the quantized layer with the current ω's.
class ReflectionPass {
public:
    ReflectionPass(const ModelConfig& cfg, const model::DecoderLayerWeights& layer, int index,
                   const ReflectionSetup& setup)
        : m_cfg(cfg), m_index(index), m_setup(setup), m_params(model::layerParams<float>(layer))
    {
        m_hooks.input = [this](LinearKind k, RowMatrix& x) { input(k, x); };
        m_hooks.inputBackward = [this](LinearKind k, RowMatrix& dx) { inputBackward(k, dx); };
        m_hooks.qkv = [this](RowMatrix& q, RowMatrix& k, RowMatrix& v) { qkv(q, k, v); };
        m_hooks.qkvBackward = [this](RowMatrix& dq, RowMatrix& dk, RowMatrix&) {
            if (!m_setup.qkRotate) return;
            const Eigen::Index d = m_setup.qkRotate->size();
            for (RowMatrix* m : {&dq, &dk})
                for (Eigen::Index c0 = 0; c0 + d <= m->cols(); c0 += d)
                    m_setup.qkRotate->applyTranspose(m->middleCols(c0, d));
        };
    }

    // Sets the weights of every trained group from ω.
    Status setWeights()
    {
        for (LinearKind k : kKinds) {
            const auto& g = m_setup.groups[std::size_t(k)];
            if (!g) continue;
            if (g->omega.size() > 0) m_u[std::size_t(k)] = unitOf(g->omega);
            for (std::size_t i = 0; i < g->linears.size(); ++i) {
                RowMatrix w = g->base[i];
                if (g->omega.size() > 0 && m_setup.sides != ReflectionSetup::Sides::InputsOnly)
                    reflect(w, m_u[std::size_t(k)]);
                QB_TRY_STATUS(fakeQuantizeWeightRows(w, m_setup.weightBits, m_setup.weightClip));
                m_params.w(g->linears[i]) = std::move(w);
            }
        }
        return {};
    }

    // MSE of the layer output on `in` against `target`; with grads, ∂L/∂ω per trained group.
    double run(const Eigen::Ref<const RowMatrix>& in, const Eigen::Ref<const RowMatrix>& target, int T,
               std::array<Eigen::VectorXd, 4>* grads)
    {
        RowMatrix out;
        model::layerForward<float>(m_cfg, m_params, m_index, in, T, out, m_cache, &m_hooks);
        const RowMatrix diff = out - target;
        const double n = double(diff.size());
        const double loss = diff.cast<double>().squaredNorm() / n;
        if (!grads) return loss;
        for (LinearKind k : kKinds) {
            const auto& g = m_setup.groups[std::size_t(k)];
            m_du[std::size_t(k)] = g ? Eigen::VectorXd::Zero(g->omega.size()) : Eigen::VectorXd();
            (*grads)[std::size_t(k)] = Eigen::VectorXd();
        }
        model::zeroGrads<float>(m_params, false, m_grads);
        const RowMatrix dOut = diff * float(2.0 / n);
        RowMatrix dIn;
        model::layerBackward<float>(m_cfg, m_params, m_index, in, T, dOut, dIn, m_grads, m_cache, &m_hooks);
        for (LinearKind k : kKinds) {
            const auto& g = m_setup.groups[std::size_t(k)];
            if (!g || g->omega.size() == 0) continue;
            const Eigen::VectorXf& u = m_u[std::size_t(k)];
            Eigen::VectorXd& du = m_du[std::size_t(k)];
            if (m_setup.sides != ReflectionSetup::Sides::InputsOnly)
                for (std::size_t i = 0; i < g->linears.size(); ++i)
                    addReflectionGrad(g->base[i], m_grads.weight[std::size_t(g->linears[i])], u, du);
            const Eigen::VectorXd ud = u.cast<double>();
            (*grads)[std::size_t(k)] = (du - ud * ud.dot(du)) / g->omega.norm();
        }
        return loss;
    }

private:
    void input(LinearKind k, RowMatrix& x)
    {
        const auto& g = m_setup.groups[std::size_t(k)];
        if (!g) return;
        if (g->smoothDivisor.size() == x.cols()) x.array().rowwise() /= g->smoothDivisor.array();
        if (g->fixed) g->fixed->apply(x);
        if (g->omega.size() > 0 && m_setup.sides != ReflectionSetup::Sides::WeightsOnly) {
            m_z[std::size_t(k)] = x;
            reflect(x, m_u[std::size_t(k)]);
        }
        model::fakeQuantizeActivations(x, g->act);
    }

    void inputBackward(LinearKind k, RowMatrix& dx)
    {
        const auto& g = m_setup.groups[std::size_t(k)];
        if (!g) return;
        if (g->omega.size() > 0 && m_setup.sides != ReflectionSetup::Sides::WeightsOnly) {
            const Eigen::VectorXf& u = m_u[std::size_t(k)];
            if (m_du[std::size_t(k)].size() == g->omega.size())
                addReflectionGrad(m_z[std::size_t(k)], dx, u, m_du[std::size_t(k)]);
            reflect(dx, u); // P is symmetric
        }
        if (g->fixed) g->fixed->applyTranspose(dx);
        if (g->smoothDivisor.size() == dx.cols()) dx.array().rowwise() /= g->smoothDivisor.array();
    }

    void qkv(RowMatrix& q, RowMatrix& k, RowMatrix& v)
    {
        const Eigen::Index d = m_cfg.headDim;
        if (m_setup.qkRotate) {
            model::applySegments(q, *m_setup.qkRotate);
            model::applySegments(k, *m_setup.qkRotate);
        }
        model::fakeQuantizeSegments(q, d, m_setup.q);
        model::fakeQuantizeSegments(k, d, m_setup.k);
        model::fakeQuantizeSegments(v, d, m_setup.v);
    }

    const ModelConfig& m_cfg;
    int m_index;
    const ReflectionSetup& m_setup;
    model::LayerParams<float> m_params;
    model::LayerGrads<float> m_grads;
    model::LayerCache<float> m_cache;
    model::LayerHooks<float> m_hooks;
    std::array<Eigen::VectorXf, 4> m_u;
    std::array<RowMatrix, 4> m_z;
    std::array<Eigen::VectorXd, 4> m_du;
};

Status checkSetup(const ModelConfig& cfg, const ReflectionSetup& setup, const RowMatrix& inputs,
                  const RowMatrix& targets, int T)
{
    if (T < 1 || inputs.rows() % T != 0 || inputs.rows() == 0)
        return makeError(ErrorCode::Shape, "RUQuant fine-tuning: inputs are not whole windows");
    if (targets.rows() != inputs.rows() || targets.cols() != inputs.cols() || inputs.cols() != cfg.hiddenSize)
        return makeError(ErrorCode::Shape, "RUQuant fine-tuning: inputs and targets differ in shape");
    QB_TRY_STATUS(model::checkBackwardConfig(cfg));
    for (const auto& g : setup.groups)
        if (g && ((g->omega.size() > 0 && !(g->omega.norm() > 0)) || g->base.size() != g->linears.size()))
            return makeError(ErrorCode::InvalidArgument, "RUQuant fine-tuning: a zero reflection vector or no weights");
    return {};
}

} // namespace

Result<double> reflectionLossAndGrad(const ModelConfig& cfg, const model::DecoderLayerWeights& layer, int layerIndex,
                                     const ReflectionSetup& setup, const Eigen::Ref<const RowMatrix>& inputs,
                                     const Eigen::Ref<const RowMatrix>& targets, int T,
                                     std::array<Eigen::VectorXd, 4>* grads)
{
    QB_TRY_STATUS(checkSetup(cfg, setup, inputs, targets, T));
    ReflectionPass pass(cfg, layer, layerIndex, setup);
    QB_TRY_STATUS(pass.setWeights());
    return pass.run(inputs, targets, T, grads);
}

Result<ReflectionTraining> trainReflections(const ModelConfig& cfg, const model::DecoderLayerWeights& layer,
                                            int layerIndex, ReflectionSetup& setup, const RowMatrix& inputs,
                                            const RowMatrix& targets, int T, int epochs, double lr, RunContext* ctx)
{
    const auto t0 = std::chrono::steady_clock::now();
    QB_TRY_STATUS(checkSetup(cfg, setup, inputs, targets, T));
    if (epochs < 0 || !(lr > 0)) return makeError(ErrorCode::InvalidArgument, "RUQuant fine-tuning: bad epochs or lr");
    const Eigen::Index windows = inputs.rows() / T;
    ReflectionPass pass(cfg, layer, layerIndex, setup);
    auto meanLoss = [&]() -> Result<double> {
        QB_TRY_STATUS(pass.setWeights());
        double sum = 0;
        for (Eigen::Index b = 0; b < windows; ++b)
            sum += pass.run(inputs.middleRows(b * T, T), targets.middleRows(b * T, T), T, nullptr);
        return sum / double(windows);
    };
    ReflectionTraining out;
    QB_TRY(before, meanLoss());
    out.lossBefore = *before;
    // The ω's of the epoch with the lowest mean loss over the windows so far (the initial ones to
    // begin with): the STE gradient does not follow the quantized loss closely, which can rise
    // again after a good epoch.
    std::array<Eigen::VectorXd, 4> best;
    for (LinearKind k : kKinds)
        if (const auto& g = setup.groups[std::size_t(k)]) best[std::size_t(k)] = g->omega;
    double bestLoss = out.lossBefore;
    // AdamW (β 0.9, 0.999, ε 1e-8, no weight decay), one window per step.
    std::array<Eigen::VectorXd, 4> m, v, grads;
    for (LinearKind k : kKinds)
        if (const auto& g = setup.groups[std::size_t(k)]; g && g->omega.size() > 0) {
            m[std::size_t(k)] = Eigen::VectorXd::Zero(g->omega.size());
            v[std::size_t(k)] = Eigen::VectorXd::Zero(g->omega.size());
        }
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    for (int e = 0; e < epochs; ++e) {
        for (Eigen::Index b = 0; b < windows; ++b) {
            if (ctx && ctx->isCancelled())
                return RunContext::cancelledError("RUQuant fine-tuning, layer " + std::to_string(layerIndex));
            for (auto& g : setup.groups)
                if (g)
                    for (Eigen::Index i = 0; i < g->omega.size(); ++i)
                        if (std::abs(g->omega[i]) < kOmegaGuard)
                            g->omega[i] = g->omega[i] < 0 ? -kOmegaGuard : kOmegaGuard;
            QB_TRY_STATUS(pass.setWeights());
            pass.run(inputs.middleRows(b * T, T), targets.middleRows(b * T, T), T, &grads);
            ++out.steps;
            const double c1 = 1 - std::pow(b1, out.steps), c2 = 1 - std::pow(b2, out.steps);
            for (LinearKind k : kKinds) {
                auto& g = setup.groups[std::size_t(k)];
                if (!g || g->omega.size() == 0) continue;
                const std::size_t i = std::size_t(k);
                if (!grads[i].allFinite())
                    return makeError(ErrorCode::NumericalError, "RUQuant fine-tuning: non-finite gradient",
                                     "layer " + std::to_string(layerIndex));
                m[i] = b1 * m[i] + (1 - b1) * grads[i];
                v[i] = b2 * v[i] + (1 - b2) * grads[i].cwiseAbs2();
                g->omega.array() -= lr * (m[i].array() / c1) / ((v[i].array() / c2).sqrt() + eps);
            }
        }
        QB_TRY(after, meanLoss());
        if (*after < bestLoss) { // lower (a NaN never is)
            bestLoss = *after;
            out.bestEpoch = e + 1;
            for (LinearKind k : kKinds)
                if (const auto& g = setup.groups[std::size_t(k)]) best[std::size_t(k)] = g->omega;
        }
    }
    for (LinearKind k : kKinds)
        if (auto& g = setup.groups[std::size_t(k)]) g->omega = best[std::size_t(k)];
    out.lossAfter = bestLoss;
    out.kept = out.bestEpoch == 0; // no epoch ended lower: the initial reflections
    out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return out;
}

} // namespace qb::pipeline
