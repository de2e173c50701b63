#include "pipeline/distill.h"

#include "base/dtype.h"
#include "model/forward.h"
#include "quant/container_grid.h"
#include "quant/fake_quant_grad.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numbers>
#include <string>

namespace qb::pipeline {

namespace {

using model::MatrixRT;
using model::VectorRT;
using MatF = MatrixRT<float>;

double toF16(double x) { return double(f16ToF32(f32ToF16(float(x)))); }

// How a trained tensor's parameters are stored, and so projected after every step.
enum class Storage { Free, Gptq, GgufLegacy };

struct Trainable {
    std::size_t index = 0; // into QuantizeResult::tensors / codes
    int layer = 0;
    model::Linear linear = model::Linear::Q;
    Storage storage = Storage::Free;
    int levels = 0;
};

// The effective (stored) parameters of a master copy.
void project(const Trainable& t, const DistillState::Tensor& m, quant::MatrixXdR& scale, quant::MatrixXdR& zero,
             quant::MatrixXdR& offset)
{
    scale = m.scale;
    zero = m.zero;
    offset = m.offset;
    if (t.storage == Storage::Free) return;
    for (Eigen::Index i = 0; i < scale.size(); ++i) {
        double s = toF16(scale.data()[i]);
        if (!(s > 0.0)) s = double(f16ToF32(0x0400)); // 2^-14, as storableGptqParams
        scale.data()[i] = s;
    }
    if (t.storage == Storage::Gptq)
        for (Eigen::Index i = 0; i < zero.size(); ++i)
            zero.data()[i] = std::clamp(std::nearbyint(zero.data()[i]), -double(t.levels - 1), -1.0);
    for (Eigen::Index i = 0; i < offset.size(); ++i)
        offset.data()[i] = toF16(offset.data()[i]);
}

void adamStep(quant::MatrixXdR& p, quant::MatrixXdR& m, quant::MatrixXdR& v, const quant::MatrixXdR& g, double lr,
              double clip, const DistillOptions& o, int t)
{
    const double b1c = 1.0 - std::pow(o.beta1, t), b2c = 1.0 - std::pow(o.beta2, t);
    for (Eigen::Index i = 0; i < p.size(); ++i) {
        const double gi = g.data()[i] * clip;
        double& mi = m.data()[i];
        double& vi = v.data()[i];
        mi = o.beta1 * mi + (1 - o.beta1) * gi;
        vi = o.beta2 * vi + (1 - o.beta2) * gi * gi;
        double& pi = p.data()[i];
        pi -= lr * o.weightDecay * pi;
        pi -= lr * (mi / b1c) / (std::sqrt(vi / b2c) + o.epsilon);
    }
}

template <typename V>
void adamStepVec(V& p, V& m, V& v, const V& g, double lr, double clip, const DistillOptions& o, int t)
{
    const double b1c = 1.0 - std::pow(o.beta1, t), b2c = 1.0 - std::pow(o.beta2, t);
    for (Eigen::Index i = 0; i < p.size(); ++i) {
        const double gi = double(g[i]) * clip;
        m[i] = o.beta1 * m[i] + (1 - o.beta1) * gi;
        v[i] = o.beta2 * v[i] + (1 - o.beta2) * gi * gi;
        p[i] -= lr * o.weightDecay * p[i];
        p[i] -= lr * (m[i] / b1c) / (std::sqrt(v[i] / b2c) + o.epsilon);
    }
}

// Which tensors train, and how their parameters are stored; the others go to `frozen`, with why.
std::vector<Trainable> selectTrainables(const QuantizeResult& quantized, std::vector<std::string>* frozen)
{
    std::vector<Trainable> out;
    for (std::size_t i = 0; i < quantized.tensors.size() && i < quantized.codes.size(); ++i) {
        const TensorReport& rep = quantized.tensors[i];
        if (rep.skipped || !quantized.codes[i]) continue;
        const quant::QuantizedRows* c = &quantized.codes[i]->params();
        if (c->cmpq || c->scales.size() == 0) {
            if (frozen) frozen->push_back(rep.name + " (CMPQ codebooks)");
            continue;
        }
        Trainable t{i, rep.layer, rep.linear, Storage::Free, quant::gridLevels(c->bits)};
        if (!c->container.empty()) {
            const quant::ContainerSpec* spec = quant::findContainerSpec(c->container);
            if (!spec || spec->isKQuant()) {
                if (frozen) frozen->push_back(rep.name + " (" + c->container + ": integer sub-block scales)");
                continue;
            }
            t.storage = Storage::GgufLegacy;
        } else if (rep.target == "gptq") {
            t.storage = Storage::Gptq;
        }
        out.push_back(t);
    }
    return out;
}

struct Job {
    const model::Model& teacher;
    const QuantizeResult& q;
    const CalibrationSet& calib;
    const DistillOptions& o;
    RunContext* ctx;
    std::vector<Trainable> trainables;
    std::vector<quant::MatrixU8R> codes; // per trainable, unpacked once
    model::DecoderParams<float> student;
    MatF teacherNormed; // [n·L, K]

    // Writes the effective parameters of state tensor `k` into the student's dense weight.
    void refreshWeight(const DistillState& st, std::size_t k)
    {
        const Trainable& t = trainables[k];
        quant::MatrixXdR s, z, b;
        project(t, st.tensors[k], s, z, b);
        quant::dequantizeRowsUniformAs<float>(codes[k], s, z, b, q.codes[t.index]->params().groupIndex,
                                              student.layers[std::size_t(t.layer)].w(t.linear));
    }

    void refreshGains(const DistillState& st)
    {
        if (st.gains.empty()) return;
        const std::size_t L = student.layers.size();
        for (std::size_t l = 0; l < L; ++l) {
            student.layers[l].inputNorm = st.gains[2 * l].value.cast<float>();
            student.layers[l].postNorm = st.gains[2 * l + 1].value.cast<float>();
        }
        student.finalNorm = st.gains[2 * L].value.cast<float>();
    }

    std::vector<std::int32_t> windowIds(int first, int count) const
    {
        std::vector<std::int32_t> ids;
        ids.reserve(std::size_t(count) * std::size_t(calib.seqlen));
        for (int i = 0; i < count; ++i) {
            const int w = (first + i) % calib.count;
            ids.insert(ids.end(), calib.ids.begin() + std::ptrdiff_t(w) * calib.seqlen,
                       calib.ids.begin() + std::ptrdiff_t(w + 1) * calib.seqlen);
        }
        return ids;
    }
    MatF windowTargets(int first, int count) const
    {
        const Eigen::Index T = calib.seqlen;
        MatF out(Eigen::Index(count) * T, teacherNormed.cols());
        for (int i = 0; i < count; ++i) {
            const int w = (first + i) % calib.count;
            out.middleRows(Eigen::Index(i) * T, T) = teacherNormed.middleRows(Eigen::Index(w) * T, T);
        }
        return out;
    }

    Status teacherTargets()
    {
        const Eigen::Index T = calib.seqlen;
        teacherNormed.resize(Eigen::Index(calib.count) * T, teacher.config().hiddenSize);
        model::Workspace ws;
        model::RowMatrix hidden, normed;
        std::vector<float> r;
        const int chunk = std::max(1, o.evalBatch);
        for (int w0 = 0; w0 < calib.count; w0 += chunk) {
            if (ctx && ctx->isCancelled()) return RunContext::cancelledError("distill: teacher pass");
            const int n = std::min(chunk, calib.count - w0);
            const std::vector<std::int32_t> ids = windowIds(w0, n);
            QB_TRY_STATUS(model::runDecoder(teacher, ids, calib.seqlen, hidden, ws));
            model::rmsNormForward<float>(hidden, teacher.finalNorm(), teacher.config().rmsNormEps, normed, r);
            teacherNormed.middleRows(Eigen::Index(w0) * T, normed.rows()) = normed;
        }
        return {};
    }

    // Mean loss over every calibration window (token-weighted).
    Result<double> evalLoss()
    {
        model::DecoderGradOptions go;
        go.loss = o.loss;
        go.computeGrads = false;
        model::DecoderGradsT<float> none;
        const int chunk = std::max(1, o.evalBatch);
        double sum = 0;
        for (int w0 = 0; w0 < calib.count; w0 += chunk) {
            if (ctx && ctx->isCancelled()) return RunContext::cancelledError("distill: evaluation");
            const int n = std::min(chunk, calib.count - w0);
            QB_TRY(l, model::decoderLossAndGrad<float>(student, windowIds(w0, n), calib.seqlen, windowTargets(w0, n),
                                                       go, none));
            sum += *l * double(n);
        }
        return sum / double(calib.count);
    }
};

} // namespace

double distillLearningRate(const DistillOptions& o, int step, int steps)
{
    const int warm = int(std::ceil(std::max(0.0, o.warmup) * double(steps)));
    if (step < warm) return o.lr * double(step) / double(std::max(1, warm));
    const double progress = double(step - warm) / double(std::max(1, steps - warm));
    return o.lr * std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
}

Result<DistillResult> runDistill(const model::Model& teacherIn, const QuantizeResult& quantizedIn,
                                 const CalibrationSet& calib, const DistillOptions& o, RunContext* ctx,
                                 DistillState* stateIn)
{
    // The backward pass works on F32 matrices of every layer: packed weights are decoded here.
    const auto teacherF32 = model::unpackedModel(teacherIn);
    const model::Model& teacher = *teacherF32;
    QuantizeResult quantizedF32;
    const bool unpackStudent = quantizedIn.model && quantizedIn.model->hasPacked();
    if (unpackStudent) {
        quantizedF32 = quantizedIn;
        quantizedF32.model = std::const_pointer_cast<model::Model>(model::unpackedModel(*quantizedIn.model));
    }
    const QuantizeResult& quantized = unpackStudent ? quantizedF32 : quantizedIn;
    const auto start = std::chrono::steady_clock::now();
    QB_TRY_STATUS(checkDistillablePlan(quantized.plan));
    if (!quantized.model)
        return makeError(ErrorCode::InvalidArgument, "distillation needs the quantized model (keepModel)");
    if (quantized.codes.size() != quantized.tensors.size())
        return makeError(ErrorCode::InvalidArgument, "distillation needs the codes of every tensor (keepCodes)");
    const ModelConfig& cfg = teacher.config();
    QB_TRY_STATUS(model::checkBackwardConfig(cfg));
    QB_TRY_STATUS(teacher.validate());
    const model::Model& qm = *quantized.model;
    if (qm.numLayers() != teacher.numLayers() || qm.config().hiddenSize != cfg.hiddenSize ||
        qm.lmHead().rows() != teacher.lmHead().rows())
        return makeError(ErrorCode::Shape, "the quantized model does not match the teacher");
    if (calib.count < 1 || calib.seqlen < 2 || calib.ids.size() != std::size_t(calib.tokens()))
        return makeError(ErrorCode::InvalidArgument, "distillation needs calibration windows");
    if (!(o.lr > 0) || o.batch < 1 || o.steps < 0)
        return makeError(ErrorCode::InvalidArgument, "distillation: lr must be > 0, batch >= 1, steps >= 0");
    if (o.threads > 0) model::setNumThreads(o.threads);

    const int batch = std::min(o.batch, calib.count);
    const int steps = o.steps > 0 ? o.steps : std::max(1, calib.count / batch);
    DistillResult result;
    result.normGains = o.normGains;

    Job job{teacher, quantized, calib, o, ctx, {}, {}, {}, {}};
    job.trainables = selectTrainables(quantized, &result.frozen);
    for (const Trainable& t : job.trainables)
        job.codes.push_back(quantized.codes[t.index]->codes());
    result.trainedTensors = int(job.trainables.size());

    // The student in F32: the quantized model's layers (norms, biases) and its embedding/head.
    job.student.config = &qm.config();
    for (int l = 0; l < qm.numLayers(); ++l) {
        const auto w = qm.layer(l);
        if (!w) return makeError(ErrorCode::InvalidArgument, "quantized model misses a layer", std::to_string(l));
        job.student.layers.push_back(model::layerParams<float>(*w));
    }
    job.student.finalNorm = qm.finalNorm();
    job.student.embedding = &qm.embedding();
    job.student.lmHead = &qm.lmHead();
    job.student.teacherLmHead = &teacher.lmHead();

    // Optimiser state: fresh, or the caller's to resume.
    DistillState local;
    DistillState& st = stateIn ? *stateIn : local;
    const bool resume = st.initialised() && st.step > 0;
    if (resume) {
        bool fits = st.steps == steps && st.tensors.size() == job.trainables.size() &&
                    st.gains.size() == (o.normGains ? 2 * job.student.layers.size() + 1 : 0);
        for (std::size_t k = 0; fits && k < st.tensors.size(); ++k) {
            const auto& c = quantized.codes[job.trainables[k].index]->params();
            fits = st.tensors[k].index == job.trainables[k].index && st.tensors[k].scale.rows() == c.scales.rows() &&
                   st.tensors[k].scale.cols() == c.scales.cols();
        }
        if (!fits)
            return makeError(ErrorCode::InvalidArgument,
                             "the distillation state to resume does not match this run (steps, tensors or options)");
    } else {
        st = DistillState{};
        st.steps = steps;
        for (const Trainable& t : job.trainables) {
            const auto& c = quantized.codes[t.index]->params();
            DistillState::Tensor m;
            m.index = t.index;
            m.scale = c.scales;
            m.zero = c.zeros;
            m.offset = c.offsets;
            m.trainZero = t.storage != Storage::GgufLegacy;
            m.trainOffset = c.offsets.size() > 0;
            m.mScale.setZero(c.scales.rows(), c.scales.cols());
            m.vScale = m.mScale;
            if (m.trainZero) m.mZero = m.vZero = m.mScale;
            if (m.trainOffset) m.mOffset = m.vOffset = m.mScale;
            st.tensors.push_back(std::move(m));
        }
        if (o.normGains) {
            auto gains = [](const model::RowVector& v) {
                DistillState::Gains g;
                g.value = v.cast<double>();
                g.m.setZero(v.size());
                g.v.setZero(v.size());
                return g;
            };
            for (const auto& lp : job.student.layers) {
                st.gains.push_back(gains(lp.inputNorm));
                st.gains.push_back(gains(lp.postNorm));
            }
            st.gains.push_back(gains(qm.finalNorm()));
        }
    }

    if (ctx) ctx->beginStage("distill", steps, "teacher targets");
    QB_TRY_STATUS(job.teacherTargets());
    // The student starts from the stored parameters (a fresh run: the projection of the quantize
    // job's own, which are already storable).
    for (std::size_t k = 0; k < job.trainables.size(); ++k)
        job.refreshWeight(st, k);
    job.refreshGains(st);
    {
        // The loss before, over every window, with the quantize job's parameters.
        model::DecoderParams<float> saved;
        if (resume) {
            saved = job.student;
            for (std::size_t k = 0; k < job.trainables.size(); ++k) {
                const auto& t = job.trainables[k];
                const auto& c = quantized.codes[t.index]->params();
                quant::dequantizeRowsUniformAs<float>(job.codes[k], c.scales, c.zeros, c.offsets, c.groupIndex,
                                                      job.student.layers[std::size_t(t.layer)].w(t.linear));
            }
            for (std::size_t l = 0; l < job.student.layers.size(); ++l) {
                job.student.layers[l].inputNorm = qm.layer(int(l))->inputNorm;
                job.student.layers[l].postNorm = qm.layer(int(l))->postNorm;
            }
            job.student.finalNorm = qm.finalNorm();
        }
        QB_TRY(before, job.evalLoss());
        result.lossBefore = *before;
        if (resume) job.student = std::move(saved);
    }
    if (ctx) ctx->setDone(st.step);

    // Training.
    model::DecoderGradsT<float> grads;
    grads.layers.resize(job.student.layers.size());
    model::DecoderGradOptions go;
    go.loss = o.loss;
    go.normGains = o.normGains;
    std::vector<quant::MatrixXdR> dS(job.trainables.size()), dZ(job.trainables.size()), dB(job.trainables.size());
    for (; st.step < steps; ++st.step) {
        if (ctx && ctx->isCancelled()) return RunContext::cancelledError("distill: step " + std::to_string(st.step));
        const int first = int((std::int64_t(st.step) * batch) % calib.count);
        for (std::size_t l = 0; l < job.student.layers.size(); ++l)
            model::zeroGrads<float>(job.student.layers[l], o.normGains, grads.layers[l]);
        if (o.normGains) grads.finalNorm.setZero(cfg.hiddenSize);
        QB_TRY(loss, model::decoderLossAndGrad<float>(job.student, job.windowIds(first, batch), calib.seqlen,
                                                      job.windowTargets(first, batch), go, grads));
        if (!std::isfinite(*loss))
            return makeError(ErrorCode::NumericalError, "distillation loss is not finite",
                             "step " + std::to_string(st.step));
        // Group gradients through ŵ = s·(z + q) − b at the effective (stored) parameters.
        double norm2 = 0;
        for (std::size_t k = 0; k < job.trainables.size(); ++k) {
            const Trainable& t = job.trainables[k];
            quant::MatrixXdR s, z, b;
            project(t, st.tensors[k], s, z, b);
            dS[k].setZero(s.rows(), s.cols());
            dZ[k].setZero(s.rows(), s.cols());
            if (st.tensors[k].trainOffset) dB[k].setZero(s.rows(), s.cols());
            quant::fakeQuantGradsUniform(job.codes[k], s, z, quantized.codes[t.index]->params().groupIndex,
                                         grads.layers[std::size_t(t.layer)].weight[std::size_t(t.linear)], dS[k], dZ[k],
                                         st.tensors[k].trainOffset ? &dB[k] : nullptr);
            norm2 += dS[k].squaredNorm();
            if (st.tensors[k].trainZero) norm2 += dZ[k].squaredNorm();
            if (st.tensors[k].trainOffset) norm2 += dB[k].squaredNorm();
        }
        if (o.normGains) {
            for (const auto& g : grads.layers)
                norm2 += double(g.inputNorm.squaredNorm()) + double(g.postNorm.squaredNorm());
            norm2 += double(grads.finalNorm.squaredNorm());
        }
        const double gradNorm = std::sqrt(norm2);
        const double clip = o.clipNorm > 0 && gradNorm > o.clipNorm ? o.clipNorm / (gradNorm + 1e-6) : 1.0;
        const double lr = distillLearningRate(o, st.step, steps);
        const int t = st.step + 1;
        for (std::size_t k = 0; k < job.trainables.size(); ++k) {
            DistillState::Tensor& m = st.tensors[k];
            adamStep(m.scale, m.mScale, m.vScale, dS[k], lr, clip, o, t);
            if (m.trainZero) adamStep(m.zero, m.mZero, m.vZero, dZ[k], lr, clip, o, t);
            if (m.trainOffset) adamStep(m.offset, m.mOffset, m.vOffset, dB[k], lr, clip, o, t);
            job.refreshWeight(st, k);
        }
        if (o.normGains) {
            const std::size_t L = job.student.layers.size();
            for (std::size_t l = 0; l < L; ++l) {
                for (int which = 0; which < 2; ++which) {
                    auto& g = st.gains[2 * l + std::size_t(which)];
                    const Eigen::RowVectorXd d =
                        (which == 0 ? grads.layers[l].inputNorm : grads.layers[l].postNorm).cast<double>();
                    adamStepVec(g.value, g.m, g.v, d, lr, clip, o, t);
                }
            }
            const Eigen::RowVectorXd d = grads.finalNorm.cast<double>();
            adamStepVec(st.gains[2 * L].value, st.gains[2 * L].m, st.gains[2 * L].v, d, lr, clip, o, t);
            job.refreshGains(st);
        }
        st.losses.push_back(*loss);
        if (o.onStep) o.onStep({st.step, steps, *loss, lr, gradNorm});
        if (ctx) {
            ctx->setDetail("step " + std::to_string(st.step + 1) + " loss " + std::to_string(*loss));
            ctx->advance();
        }
    }

    QB_TRY(after, job.evalLoss());
    result.lossAfter = *after;
    result.stepLoss = st.losses;
    result.steps = steps;

    // The distilled model: the quantized model with the student's weights (and gains) in place.
    auto out = std::make_shared<model::Model>(qm);
    for (int l = 0; l < qm.numLayers(); ++l) {
        auto w = std::make_shared<model::DecoderLayerWeights>(*qm.layer(l));
        const auto& lp = job.student.layers[std::size_t(l)];
        for (model::Linear lin : model::kAllLinears)
            w->weight(lin) = lp.w(lin);
        w->inputNorm = lp.inputNorm;
        w->postNorm = lp.postNorm;
        out->setLayer(l, std::move(w));
    }
    out->finalNorm() = job.student.finalNorm;
    result.model = std::move(out);
    result.codes = quantized.codes;
    for (std::size_t k = 0; k < job.trainables.size(); ++k) {
        quant::StoredGridPtr& stored = result.codes[job.trainables[k].index];
        quant::QuantizedRows c = stored->params();
        c.codes = std::move(job.codes[k]);
        quant::MatrixXdR s, z, b;
        project(job.trainables[k], st.tensors[k], s, z, b);
        c.scales = std::move(s);
        c.zeros = std::move(z);
        c.offsets = std::move(b);
        stored = quant::storeGrid(c);
    }
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
}

void applyDistill(QuantizeResult& quantized, const DistillResult& distilled)
{
    quantized.model = distilled.model;
    quantized.codes = distilled.codes;
}

DistillScope distillScope(const QuantizeResult& quantized)
{
    DistillScope scope;
    scope.trained = int(selectTrainables(quantized, &scope.frozen).size());
    return scope;
}

Status checkDistillablePlan(const ResolvedPlan& plan)
{
    if (!plan.activation.empty())
        return makeError(ErrorCode::Unsupported, "distillation of a weight-and-activation plan (" +
                                                     plan.activation.describe() +
                                                     ") is not supported: the backward pass has no runtime transforms");
    return {};
}

Status checkDistillable(const QuantizeResult& quantized)
{
    QB_TRY_STATUS(checkDistillablePlan(quantized.plan));
    if (!quantized.model)
        return makeError(ErrorCode::InvalidArgument, "distillation needs the quantized model (keepModel)");
    if (quantized.codes.size() != quantized.tensors.size())
        return makeError(ErrorCode::InvalidArgument, "distillation needs the codes of every tensor (keepCodes)");
    QB_TRY_STATUS(model::checkBackwardConfig(quantized.model->config()));
    const DistillScope scope = distillScope(quantized);
    if (scope.trained == 0) {
        std::string why = scope.frozen.empty() ? std::string("no tensor is quantized") : scope.frozen.front();
        if (scope.frozen.size() > 1) why += " and " + std::to_string(scope.frozen.size() - 1) + " more";
        return makeError(ErrorCode::Unsupported,
                         std::string("distillation has nothing to train: no quantized tensor has free scales and "
                                     "zeros (") +
                             why + ")");
    }
    return {};
}

} // namespace qb::pipeline
