#include "model/backward.h"

#include "model/forward.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace qb::model {

namespace {

template <typename S>
using ConstRef = Eigen::Ref<const MatrixRT<S>>;

template <typename S>
void linearForward(const ConstRef<S>& x, const MatrixRT<S>& w, const VectorRT<S>& bias, MatrixRT<S>& out)
{
    out.resize(x.rows(), w.rows());
    out.noalias() = x * w.transpose();
    if (bias.size() > 0) out.rowwise() += bias;
}

// dX (+)= dY·W and dW += dYᵀ·X: the two GEMMs of a linear layer's backward step.
template <typename S>
void linearBackward(const ConstRef<S>& x, const MatrixRT<S>& w, const MatrixRT<S>& dy, MatrixRT<S>& dx, bool accumulate,
                    MatrixRT<S>& dw)
{
    if (accumulate) {
        dx.noalias() += dy * w;
    } else {
        dx.resize(dy.rows(), w.cols());
        dx.noalias() = dy * w;
    }
    dw.noalias() += dy.transpose() * x;
}

// RoPE tables as forward.cpp builds them: angles and cos/sin in double, rounded once to S.
template <typename S>
void ropeTables(const ModelConfig& cfg, int T, LayerCache<S>& c)
{
    const std::vector<double> inv = ropeInverseFrequencies(cfg);
    const Eigen::Index half = Eigen::Index(inv.size());
    c.cos.resize(T, half);
    c.sin.resize(T, half);
    for (int t = 0; t < T; ++t)
        for (Eigen::Index i = 0; i < half; ++i) {
            const double a = double(t) * inv[std::size_t(i)];
            c.cos(t, i) = S(std::cos(a));
            c.sin(t, i) = S(std::sin(a));
        }
}

// Rotate-half RoPE in place; sign -1 applies the transpose (the inverse rotation), which is the
// backward step of a rotation.
template <typename S>
void rope(MatrixRT<S>& m, int heads, int d, int T, const LayerCache<S>& c, S sign)
{
    const int half = d / 2;
    const Eigen::Index n = m.rows();
#pragma omp parallel for schedule(static)
    for (Eigen::Index r = 0; r < n; ++r) {
        const Eigen::Index t = r % T;
        const S* cs = c.cos.row(t).data();
        const S* sn = c.sin.row(t).data();
        S* row = m.row(r).data();
        for (int h = 0; h < heads; ++h) {
            S* x = row + h * d;
            for (int i = 0; i < half; ++i) {
                const S x1 = x[i], x2 = x[i + half], s = sign * sn[i];
                x[i] = x1 * cs[i] - x2 * s;
                x[i + half] = x2 * cs[i] + x1 * s;
            }
        }
    }
}

struct AttentionShape {
    int H, Hkv, d, group, B, T, window;
    double scale;
};

AttentionShape attentionShape(const ModelConfig& cfg, int layer, Eigen::Index rows, int T)
{
    AttentionShape a;
    a.H = int(cfg.numAttentionHeads);
    a.Hkv = int(cfg.numKeyValueHeads);
    a.d = int(cfg.headDim);
    a.group = a.H / a.Hkv;
    a.T = T;
    a.B = int(rows / T);
    a.window = isSlidingLayer(cfg, layer) ? int(std::min<std::int64_t>(cfg.slidingWindow, T)) : T;
    a.scale = 1.0 / std::sqrt(cfg.queryPreAttnScalar > 0 ? cfg.queryPreAttnScalar : double(a.d));
    return a;
}

// Softmax probabilities of one head of one window into P ([T, T], zero where masked), with the
// arithmetic of forward.cpp's attention (scale after the dot products, max-subtracted exp in S).
template <typename S, typename QBlock, typename KBlock>
void attentionProbs(const QBlock& Q, const KBlock& K, const AttentionShape& a, MatrixRT<S>& P)
{
    const S scale = S(a.scale);
    P.noalias() = Q * K.transpose();
    for (int i = 0; i < a.T; ++i) {
        S* row = P.row(i).data();
        const int lo = std::max(0, i - a.window + 1);
        for (int j = 0; j < lo; ++j)
            row[j] = 0;
        for (int j = i + 1; j < a.T; ++j)
            row[j] = 0;
        for (int j = lo; j <= i; ++j)
            row[j] *= scale;
        S mx = -std::numeric_limits<S>::infinity();
        for (int j = lo; j <= i; ++j)
            mx = std::max(mx, row[j]);
        S sum = 0;
        for (int j = lo; j <= i; ++j) {
            row[j] = std::exp(row[j] - mx);
            sum += row[j];
        }
        const S invSum = S(1) / sum;
        for (int j = lo; j <= i; ++j)
            row[j] *= invSum;
    }
}

template <typename S>
void ensureScores(LayerCache<S>& c, int T)
{
    const std::size_t need = 2 * std::size_t(omp_get_max_threads());
    if (c.scores.size() < need) c.scores.resize(need);
    for (auto& m : c.scores)
        m.resize(T, T);
}

template <typename S>
void attentionForward(const AttentionShape& a, LayerCache<S>& c)
{
    c.attn.resize(c.q.rows(), Eigen::Index(a.H) * a.d);
    ensureScores(c, a.T);
    const Eigen::Index T = a.T, d = a.d;
#pragma omp parallel for schedule(dynamic)
    for (int p = 0; p < a.B * a.H; ++p) {
        const int b = p / a.H, h = p % a.H, g = h / a.group;
        MatrixRT<S>& P = c.scores[2 * std::size_t(omp_get_thread_num())];
        attentionProbs<S>(c.q.block(b * T, h * d, T, d), c.k.block(b * T, g * d, T, d), a, P);
        c.attn.block(b * T, h * d, T, d).noalias() = P * c.v.block(b * T, g * d, T, d);
    }
}

// dq, dk, dv from dAttn (c.dA, [rows, H·d]) with the probabilities recomputed per head. One
// iteration per window and kv head, so the query heads sharing it add into dk/dv in turn.
template <typename S>
void attentionBackward(const AttentionShape& a, LayerCache<S>& c)
{
    c.dq.resize(c.q.rows(), c.q.cols());
    c.dk.setZero(c.k.rows(), c.k.cols());
    c.dv.setZero(c.v.rows(), c.v.cols());
    ensureScores(c, a.T);
    const Eigen::Index T = a.T, d = a.d;
    const S scale = S(a.scale);
#pragma omp parallel for schedule(dynamic)
    for (int p = 0; p < a.B * a.Hkv; ++p) {
        const int b = p / a.Hkv, g = p % a.Hkv;
        MatrixRT<S>& P = c.scores[2 * std::size_t(omp_get_thread_num())];
        MatrixRT<S>& dP = c.scores[2 * std::size_t(omp_get_thread_num()) + 1];
        const auto K = c.k.block(b * T, g * d, T, d);
        const auto V = c.v.block(b * T, g * d, T, d);
        for (int h = g * a.group; h < (g + 1) * a.group; ++h) {
            const auto Q = c.q.block(b * T, h * d, T, d);
            const auto dO = c.dA.block(b * T, h * d, T, d);
            attentionProbs<S>(Q, K, a, P);
            dP.noalias() = dO * V.transpose();
            // softmax backward: dS = P ⊙ (dP - rowsum(P ⊙ dP)), then the score scale.
            for (Eigen::Index i = 0; i < T; ++i) {
                S dot = 0;
                for (Eigen::Index j = 0; j <= i; ++j)
                    dot += P(i, j) * dP(i, j);
                for (Eigen::Index j = 0; j < T; ++j)
                    dP(i, j) = j <= i ? P(i, j) * (dP(i, j) - dot) * scale : S(0);
            }
            c.dv.block(b * T, g * d, T, d).noalias() += P.transpose() * dO;
            c.dq.block(b * T, h * d, T, d).noalias() = dP * K;
            c.dk.block(b * T, g * d, T, d).noalias() += dP.transpose() * Q;
        }
    }
}

template <typename S>
S silu(S x)
{
    return x / (S(1) + std::exp(-x));
}

} // namespace

Status checkBackwardConfig(const ModelConfig& cfg)
{
    auto unsupported = [&](const std::string& what) {
        return makeError(ErrorCode::Unsupported, "the backward pass does not support " + what,
                         "model_type " + cfg.modelType);
    };
    if (cfg.gemmaNorms) return unsupported("Gemma's norms");
    if (cfg.attnLogitSoftcap > 0 || cfg.finalLogitSoftcap > 0) return unsupported("logit soft-capping");
    if (cfg.hiddenAct != HiddenAct::Silu) return unsupported("activations other than SiLU");
    if (cfg.ropeLocalTheta > 0) return unsupported("a separate RoPE theta for sliding layers");
    if (cfg.qkNorm) return unsupported("q/k norms");
    return {};
}

template <typename S>
LayerParams<S> layerParams(const DecoderLayerWeights& w)
{
    LayerParams<S> p;
    p.inputNorm = w.inputNorm.cast<S>();
    p.postNorm = w.postNorm.cast<S>();
    for (Linear l : kAllLinears) {
        if (const PackedWeightPtr& packed = w.packedWeight(l)) p.w(l) = decodePacked(*packed).cast<S>();
        else p.w(l) = w.weight(l).cast<S>();
        p.bias[std::size_t(l)] = w.bias(l).cast<S>();
    }
    return p;
}

template <typename S>
void zeroGrads(const LayerParams<S>& p, bool gains, LayerGrads<S>& g)
{
    for (Linear l : kAllLinears)
        g.weight[std::size_t(l)].setZero(p.w(l).rows(), p.w(l).cols());
    g.gains = gains;
    if (gains) {
        g.inputNorm.setZero(p.inputNorm.size());
        g.postNorm.setZero(p.postNorm.size());
    }
}

template <typename S>
void rmsNormForward(const Eigen::Ref<const MatrixRT<S>>& x, const VectorRT<S>& w, double eps, MatrixRT<S>& y,
                    std::vector<S>& rInv)
{
    const Eigen::Index n = x.rows(), k = x.cols();
    y.resize(n, k);
    rInv.resize(std::size_t(n));
#pragma omp parallel for schedule(static)
    for (Eigen::Index r = 0; r < n; ++r) {
        const S* xr = x.row(r).data();
        double ss = 0;
        for (Eigen::Index j = 0; j < k; ++j)
            ss += double(xr[j]) * double(xr[j]);
        const S scale = S(1.0 / std::sqrt(ss / double(k) + eps));
        rInv[std::size_t(r)] = scale;
        y.row(r) = (x.row(r) * scale).cwiseProduct(w);
    }
}

template <typename S>
void rmsNormBackward(const Eigen::Ref<const MatrixRT<S>>& x, const VectorRT<S>& w, const std::vector<S>& rInv,
                     const Eigen::Ref<const MatrixRT<S>>& dy, MatrixRT<S>& dx, bool accumulate, VectorRT<S>* dw)
{
    const Eigen::Index n = x.rows(), k = x.cols();
    if (!accumulate) dx.setZero(n, k);
    // y_j = w_j x_j r, r = (mean x² + eps)^-1/2:  dx_j = r w_j dy_j - x_j r³/k Σ_i w_i dy_i x_i.
#pragma omp parallel for schedule(static)
    for (Eigen::Index r = 0; r < n; ++r) {
        const S* xr = x.row(r).data();
        const S* g = dy.row(r).data();
        S* out = dx.row(r).data();
        const S ri = rInv[std::size_t(r)];
        S dot = 0;
        for (Eigen::Index j = 0; j < k; ++j)
            dot += w[j] * g[j] * xr[j];
        const S c = dot * ri * ri * ri / S(k);
        for (Eigen::Index j = 0; j < k; ++j)
            out[j] += ri * w[j] * g[j] - xr[j] * c;
    }
    if (dw) {
        // Σ_rows dy ⊙ x · r, per column: a reduction over rows, done column-blocked per thread.
        const int threads = omp_get_max_threads();
        std::vector<VectorRT<S>> part(std::size_t(threads), VectorRT<S>::Zero(k));
#pragma omp parallel for schedule(static)
        for (Eigen::Index r = 0; r < n; ++r)
            part[std::size_t(omp_get_thread_num())] += dy.row(r).cwiseProduct(x.row(r)) * rInv[std::size_t(r)];
        for (const auto& v : part)
            *dw += v;
    }
}

namespace {

// The layer forward into c; out == nullptr skips the last GEMM (down_proj) and the residual, which
// a backward step does not need.
template <typename S>
void layerForwardInto(const ModelConfig& cfg, const LayerParams<S>& p, int layer,
                      const Eigen::Ref<const MatrixRT<S>>& in, int T, MatrixRT<S>* out, LayerCache<S>& c,
                      const LayerHooks<S>* hooks)
{
    auto hookInput = [&](LinearKind k, MatrixRT<S>& x) {
        if (hooks && hooks->input) hooks->input(k, x);
    };
    const AttentionShape a = attentionShape(cfg, layer, in.rows(), T);
    const double eps = cfg.rmsNormEps;
    rmsNormForward<S>(in, p.inputNorm, eps, c.xn1, c.r1);
    hookInput(LinearKind::Qkv, c.xn1);
    linearForward<S>(c.xn1, p.w(Linear::Q), p.b(Linear::Q), c.q);
    linearForward<S>(c.xn1, p.w(Linear::K), p.b(Linear::K), c.k);
    linearForward<S>(c.xn1, p.w(Linear::V), p.b(Linear::V), c.v);
    ropeTables<S>(cfg, T, c);
    rope<S>(c.q, a.H, a.d, T, c, S(1));
    rope<S>(c.k, a.Hkv, a.d, T, c, S(1));
    if (hooks && hooks->qkv) hooks->qkv(c.q, c.k, c.v);
    attentionForward<S>(a, c);
    hookInput(LinearKind::O, c.attn);
    linearForward<S>(c.attn, p.w(Linear::O), p.b(Linear::O), c.h1);
    c.h1 += in;
    rmsNormForward<S>(c.h1, p.postNorm, eps, c.xn2, c.r2);
    hookInput(LinearKind::GateUp, c.xn2);
    linearForward<S>(c.xn2, p.w(Linear::Gate), p.b(Linear::Gate), c.gate);
    linearForward<S>(c.xn2, p.w(Linear::Up), p.b(Linear::Up), c.up);
    c.act.resize(c.gate.rows(), c.gate.cols());
    const Eigen::Index n = c.gate.rows(), I = c.gate.cols();
#pragma omp parallel for schedule(static)
    for (Eigen::Index r = 0; r < n; ++r)
        for (Eigen::Index j = 0; j < I; ++j)
            c.act(r, j) = silu(c.gate(r, j)) * c.up(r, j);
    hookInput(LinearKind::Down, c.act);
    if (!out) return;
    linearForward<S>(c.act, p.w(Linear::Down), p.b(Linear::Down), *out);
    *out += c.h1;
}

// The backward step of a layer whose intermediates for `in` are in c.
template <typename S>
void layerBackwardCached(const ModelConfig& cfg, const LayerParams<S>& p, int layer,
                         const Eigen::Ref<const MatrixRT<S>>& in, int T, const MatrixRT<S>& dOut, MatrixRT<S>& dIn,
                         LayerGrads<S>& g, LayerCache<S>& c, const LayerHooks<S>* hooks)
{
    const AttentionShape a = attentionShape(cfg, layer, in.rows(), T);
    auto hookBack = [&](LinearKind k, MatrixRT<S>& dx) {
        if (hooks && hooks->inputBackward) hooks->inputBackward(k, dx);
    };
    auto gw = [&](Linear l) -> MatrixRT<S>& { return g.weight[std::size_t(l)]; };

    // MLP: out = h1 + down(act), act = silu(gate) ⊙ up.
    linearBackward<S>(c.act, p.w(Linear::Down), dOut, c.dA, false, gw(Linear::Down));
    hookBack(LinearKind::Down, c.dA);
    const Eigen::Index n = c.gate.rows(), I = c.gate.cols();
    c.dB.resize(n, I); // dGate
#pragma omp parallel for schedule(static)
    for (Eigen::Index r = 0; r < n; ++r)
        for (Eigen::Index j = 0; j < I; ++j) {
            const S x = c.gate(r, j), da = c.dA(r, j);
            const S sg = S(1) / (S(1) + std::exp(-x));
            c.dB(r, j) = da * c.up(r, j) * sg * (S(1) + x * (S(1) - sg));
            c.dA(r, j) = da * x * sg; // dUp
        }
    linearBackward<S>(c.xn2, p.w(Linear::Gate), c.dB, c.dC, false, gw(Linear::Gate));
    linearBackward<S>(c.xn2, p.w(Linear::Up), c.dA, c.dC, true, gw(Linear::Up));
    hookBack(LinearKind::GateUp, c.dC);
    // dh1 = dOut + norm backward of dXn2 (c.dC).
    MatrixRT<S> dh1 = dOut;
    rmsNormBackward<S>(c.h1, p.postNorm, c.r2, c.dC, dh1, true, g.gains ? &g.postNorm : nullptr);

    // Attention: h1 = in + o(attn).
    linearBackward<S>(c.attn, p.w(Linear::O), dh1, c.dA, false, gw(Linear::O));
    hookBack(LinearKind::O, c.dA);
    attentionBackward<S>(a, c);
    if (hooks && hooks->qkvBackward) hooks->qkvBackward(c.dq, c.dk, c.dv);
    rope<S>(c.dq, a.H, a.d, T, c, S(-1));
    rope<S>(c.dk, a.Hkv, a.d, T, c, S(-1));
    linearBackward<S>(c.xn1, p.w(Linear::Q), c.dq, c.dC, false, gw(Linear::Q));
    linearBackward<S>(c.xn1, p.w(Linear::K), c.dk, c.dC, true, gw(Linear::K));
    linearBackward<S>(c.xn1, p.w(Linear::V), c.dv, c.dC, true, gw(Linear::V));
    hookBack(LinearKind::Qkv, c.dC);
    rmsNormBackward<S>(in, p.inputNorm, c.r1, c.dC, dh1, true, g.gains ? &g.inputNorm : nullptr);
    dIn = std::move(dh1);
}

} // namespace

template <typename S>
void layerForward(const ModelConfig& cfg, const LayerParams<S>& p, int layer, const Eigen::Ref<const MatrixRT<S>>& in,
                  int T, MatrixRT<S>& out, LayerCache<S>& c, const LayerHooks<S>* hooks)
{
    layerForwardInto<S>(cfg, p, layer, in, T, &out, c, hooks);
}

template <typename S>
void layerBackward(const ModelConfig& cfg, const LayerParams<S>& p, int layer, const Eigen::Ref<const MatrixRT<S>>& in,
                   int T, const MatrixRT<S>& dOut, MatrixRT<S>& dIn, LayerGrads<S>& g, LayerCache<S>& c,
                   const LayerHooks<S>* hooks)
{
    layerForwardInto<S>(cfg, p, layer, in, T, nullptr, c, hooks); // recompute (checkpointing)
    layerBackwardCached<S>(cfg, p, layer, in, T, dOut, dIn, g, c, hooks);
}

template <typename S>
Result<double> decoderLossAndGrad(const DecoderParams<S>& st, std::span<const std::int32_t> ids, int T,
                                  const Eigen::Ref<const MatrixRT<S>>& teacherNormed, const DecoderGradOptions& options,
                                  DecoderGradsT<S>& grads)
{
    if (!st.config || !st.embedding || !st.lmHead)
        return makeError(ErrorCode::InvalidArgument, "student parameters incomplete");
    const ModelConfig& cfg = *st.config;
    QB_TRY_STATUS(checkBackwardConfig(cfg));
    const Eigen::Index N = Eigen::Index(ids.size()), K = cfg.hiddenSize;
    if (T <= 0 || N == 0 || N % T != 0)
        return makeError(ErrorCode::Shape,
                         "token count " + std::to_string(N) + " is not a multiple of the window " + std::to_string(T));
    if (teacherNormed.rows() != N || teacherNormed.cols() != K)
        return makeError(ErrorCode::Shape, "teacher hidden states [" + std::to_string(teacherNormed.rows()) + " x " +
                                               std::to_string(teacherNormed.cols()) + "] do not match the tokens");
    const int L = int(st.layers.size());
    if (options.computeGrads && (int(grads.layers.size()) != L))
        return makeError(ErrorCode::InvalidArgument, "gradients not prepared (zeroGrads per layer)");
    const MatrixRT<S>& E = *st.embedding;
    const MatrixRT<S>& head = *st.lmHead;
    const MatrixRT<S>& teacherHead = st.teacherLmHead ? *st.teacherLmHead : head;
    if (teacherHead.rows() != head.rows() || teacherHead.cols() != K || head.cols() != K)
        return makeError(ErrorCode::Shape, "lm_head shapes do not match the hidden size");

    // Forward, keeping only each layer's input.
    std::vector<MatrixRT<S>> inputs(std::size_t(L) + 1);
    inputs[0].resize(N, K);
    for (Eigen::Index i = 0; i < N; ++i) {
        const std::int32_t id = ids[std::size_t(i)];
        if (id < 0 || id >= E.rows())
            return makeError(ErrorCode::OutOfRange, "token id " + std::to_string(id) + " outside the vocabulary",
                             "token " + std::to_string(i));
        inputs[0].row(i) = E.row(id);
    }
    // The last layers' intermediates are kept from this pass (the last one always: its backward
    // comes first, so keeping it costs no more than recomputing it); the others are recomputed.
    const double perLayer = double(sizeof(S)) * double(N) *
                            double(3 * K + 2 * cfg.numAttentionHeads * cfg.headDim +
                                   2 * cfg.numKeyValueHeads * cfg.headDim + 3 * cfg.intermediateSize);
    const int kept = options.computeGrads
                         ? std::min(L, 1 + int(std::max<double>(0.0, double(options.keepActivationsBytes)) / perLayer))
                         : 0;
    std::vector<LayerCache<S>> keptCaches;
    keptCaches.resize(std::size_t(kept));
    LayerCache<S> cache;
    auto cacheOf = [&](int l) -> LayerCache<S>& {
        return l >= L - kept ? keptCaches[std::size_t(l - (L - kept))] : cache;
    };
    for (int l = 0; l < L; ++l)
        layerForward<S>(cfg, st.layers[std::size_t(l)], l, inputs[std::size_t(l)], T, inputs[std::size_t(l) + 1],
                        cacheOf(l));
    MatrixRT<S> xn;
    std::vector<S> rF;
    rmsNormForward<S>(inputs[std::size_t(L)], st.finalNorm, cfg.rmsNormEps, xn, rF);

    // Loss and its gradient with respect to the final normed hidden states.
    double loss = 0;
    MatrixRT<S> dxn;
    if (options.computeGrads) dxn.resize(N, K);
    if (options.loss == DistillLoss::HiddenMse) {
        const double denom = double(N) * double(K);
        MatrixRT<S> diff = xn - teacherNormed;
        loss = diff.template cast<double>().squaredNorm() / denom;
        if (options.computeGrads) dxn = diff * S(2.0 / denom);
    } else {
        const Eigen::Index V = head.rows();
        const Eigen::Index chunk = options.logitsChunk > 0
                                       ? options.logitsChunk
                                       : std::max<Eigen::Index>(1, std::min<Eigen::Index>(N, (16 << 20) / V));
        MatrixRT<S> sl, tl;
        std::vector<double> rowLoss;
        for (Eigen::Index c0 = 0; c0 < N; c0 += chunk) {
            const Eigen::Index m = std::min(chunk, N - c0);
            sl.resize(m, V);
            tl.resize(m, V);
            sl.noalias() = xn.middleRows(c0, m) * head.transpose();
            tl.noalias() = teacherNormed.middleRows(c0, m) * teacherHead.transpose();
            rowLoss.assign(std::size_t(m), 0.0);
#pragma omp parallel for schedule(static)
            for (Eigen::Index i = 0; i < m; ++i) {
                S* s = sl.row(i).data();
                const S* t = tl.row(i).data();
                double smax = -std::numeric_limits<double>::infinity(), tmax = smax;
                for (Eigen::Index j = 0; j < V; ++j) {
                    smax = std::max(smax, double(s[j]));
                    tmax = std::max(tmax, double(t[j]));
                }
                // KL = Σ p_t (l_t - l_s) with l = x - max - log Σ exp(x - max); the exponentials are
                // taken once (in S, kept in the logits' rows) and summed in double.
                S* tx = tl.row(i).data();
                double ssum = 0, tsum = 0, cross = 0;
                for (Eigen::Index j = 0; j < V; ++j) {
                    const S es = std::exp(s[j] - S(smax)), et = std::exp(t[j] - S(tmax));
                    ssum += double(es);
                    tsum += double(et);
                    cross += double(et) * (double(t[j]) - double(s[j]));
                    s[j] = es;
                    tx[j] = et;
                }
                const double slog = smax + std::log(ssum), tlog = tmax + std::log(tsum);
                const double kl = cross / tsum - tlog + slog;
                const double si = 1.0 / (ssum * double(N)), ti = 1.0 / (tsum * double(N));
                for (Eigen::Index j = 0; j < V; ++j) // dLoss/dlogit of the student: (p_s - p_t) / N
                    s[j] = S(double(s[j]) * si - double(tx[j]) * ti);
                rowLoss[std::size_t(i)] = kl;
            }
            for (double v : rowLoss)
                loss += v;
            if (options.computeGrads) dxn.middleRows(c0, m).noalias() = sl * head;
        }
        loss /= double(N);
    }
    if (!options.computeGrads) return loss;

    // Backward: final norm, then the layers from the last, each recomputed from its input.
    MatrixRT<S> dh;
    if (options.normGains && grads.finalNorm.size() != K) grads.finalNorm.setZero(K);
    rmsNormBackward<S>(inputs[std::size_t(L)], st.finalNorm, rF, dxn, dh, false,
                       options.normGains ? &grads.finalNorm : nullptr);
    inputs[std::size_t(L)].resize(0, 0);
    for (int l = L - 1; l >= 0; --l) {
        if (l >= L - kept) {
            LayerCache<S>& c = cacheOf(l);
            layerBackwardCached<S>(cfg, st.layers[std::size_t(l)], l, inputs[std::size_t(l)], T, dh, dh,
                                   grads.layers[std::size_t(l)], c, nullptr);
            c = LayerCache<S>{}; // freed before the next layer's backward
        } else {
            layerBackward<S>(cfg, st.layers[std::size_t(l)], l, inputs[std::size_t(l)], T, dh, dh,
                             grads.layers[std::size_t(l)], cache);
        }
        inputs[std::size_t(l)].resize(0, 0);
    }
    return loss;
}

#define QB_BACKWARD_INSTANTIATE(S)                                                                                     \
    template LayerParams<S> layerParams<S>(const DecoderLayerWeights&);                                                \
    template void zeroGrads<S>(const LayerParams<S>&, bool, LayerGrads<S>&);                                           \
    template void rmsNormForward<S>(const Eigen::Ref<const MatrixRT<S>>&, const VectorRT<S>&, double, MatrixRT<S>&,    \
                                    std::vector<S>&);                                                                  \
    template void rmsNormBackward<S>(const Eigen::Ref<const MatrixRT<S>>&, const VectorRT<S>&, const std::vector<S>&,  \
                                     const Eigen::Ref<const MatrixRT<S>>&, MatrixRT<S>&, bool, VectorRT<S>*);          \
    template void layerForward<S>(const ModelConfig&, const LayerParams<S>&, int,                                      \
                                  const Eigen::Ref<const MatrixRT<S>>&, int, MatrixRT<S>&, LayerCache<S>&,             \
                                  const LayerHooks<S>*);                                                               \
    template void layerBackward<S>(const ModelConfig&, const LayerParams<S>&, int,                                     \
                                   const Eigen::Ref<const MatrixRT<S>>&, int, const MatrixRT<S>&, MatrixRT<S>&,        \
                                   LayerGrads<S>&, LayerCache<S>&, const LayerHooks<S>*);                              \
    template Result<double> decoderLossAndGrad<S>(const DecoderParams<S>&, std::span<const std::int32_t>, int,         \
                                                  const Eigen::Ref<const MatrixRT<S>>&, const DecoderGradOptions&,     \
                                                  DecoderGradsT<S>&);

QB_BACKWARD_INSTANTIATE(float)
QB_BACKWARD_INSTANTIATE(double)

} // namespace qb::model
