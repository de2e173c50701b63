#pragma once
// Backward pass of a LLaMA-family decoder (LLaMA, Qwen2, Mistral), for distillation of the
// quantization parameters (NeUQI's lightweight distillation, METHODS.md §2(a)).
//
// What: the decoder's forward arithmetic of forward.h (Hugging Face modeling_llama: RMSNorm with
// its inverse RMS taken in double, q/k/v (+bias), rotate-half RoPE from double tables, GQA causal
// softmax attention scaled by 1/sqrt(query_pre_attn_scalar or head_dim) with the sliding window
// where the config marks one, o_proj, residual, RMSNorm, SwiGLU MLP, residual, final RMSNorm,
// lm_head), written once as templates on the scalar type so that the F32 training path and the
// F64 path of the finite-difference tests are the same code; plus its reverse mode. Gradients are
// taken with respect to the activations, every linear weight as a dense matrix dL/dW = dYᵀ·X (the
// quantization parameters' gradients follow from it: quant/fake_quant_grad.h), and optionally the
// two RMSNorm gains of each layer and the final norm. Embeddings and lm_head are frozen (their
// gradients are never formed). Gemma's extra norms, q/k norms, soft-capping, GeLU and a separate
// local RoPE theta are not supported (checkBackwardConfig says so).
// Memory (checkpointing): decoderLossAndGrad keeps only each layer's input hidden states
// ([B·T, K] per layer) and recomputes one layer's intermediates inside its backward step, so the
// peak is L+1 hidden-state matrices plus one layer's activations (a LayerCache: about
// 6·K + 2·Hkv·d + 3·I values per token) plus one [chunk, V] logits block per side.
// Threading: GEMMs are Eigen's (OpenMP threads, as the forward pass); norms, RoPE, SwiGLU and
// attention run OpenMP parallel loops over rows, and windows × kv-heads (each kv head's query
// heads in one iteration, so GQA's key/value gradients are accumulated without races). Results
// do not depend on the thread count beyond GEMM rounding. Pure std + Eigen.

#include "model/model.h"

#include <Eigen/Core>

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace qb::model {

template <typename S>
using MatrixRT = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename S>
using VectorRT = Eigen::Matrix<S, 1, Eigen::Dynamic>;

// One decoder layer's parameters in scalar S: weights [out, in] as HF stores them, biases empty
// when the architecture has none (indexed by Linear).
template <typename S>
struct LayerParams {
    VectorRT<S> inputNorm, postNorm;
    std::array<MatrixRT<S>, 7> weight;
    std::array<VectorRT<S>, 7> bias;
    MatrixRT<S>& w(Linear l) { return weight[std::size_t(l)]; }
    const MatrixRT<S>& w(Linear l) const { return weight[std::size_t(l)]; }
    const VectorRT<S>& b(Linear l) const { return bias[std::size_t(l)]; }
};
template <typename S>
LayerParams<S> layerParams(const DecoderLayerWeights& w);

// Gradients of one layer, accumulated (+=) by layerBackward. weight[l] has the weight's shape;
// the norm gains are formed only when `gains` was set by zeroGrads.
template <typename S>
struct LayerGrads {
    std::array<MatrixRT<S>, 7> weight;
    VectorRT<S> inputNorm, postNorm;
    bool gains = false;
};
template <typename S>
void zeroGrads(const LayerParams<S>& p, bool gains, LayerGrads<S>& g);

// One layer's intermediates, recomputed inside its backward step (reused between layers).
template <typename S>
struct LayerCache {
    MatrixRT<S> xn1, q, k, v, attn, h1, xn2, gate, up, act;
    std::vector<S> r1, r2;              // inverse RMS per row of the two norms
    MatrixRT<S> cos, sin;               // RoPE tables [T, d/2]
    MatrixRT<S> dA, dB, dC, dq, dk, dv; // backward scratch
    std::vector<MatrixRT<S>> scores;    // per thread [T, T] x 2
};

// Whether the backward pass supports `cfg` (see the header paragraph); the error names the feature.
Status checkBackwardConfig(const ModelConfig& cfg);

// RMSNorm as forward.h: y = (x · r) ⊙ w, r = 1/sqrt(mean(x²) + eps) in double; r per row into rInv.
template <typename S>
void rmsNormForward(const Eigen::Ref<const MatrixRT<S>>& x, const VectorRT<S>& w, double eps, MatrixRT<S>& y,
                    std::vector<S>& rInv);
// dx (+)= ∂y/∂x · dy (accumulate: dx += ... when `accumulate`); dw += Σ_rows dy ⊙ x·r when dw.
template <typename S>
void rmsNormBackward(const Eigen::Ref<const MatrixRT<S>>& x, const VectorRT<S>& w, const std::vector<S>& rInv,
                     const Eigen::Ref<const MatrixRT<S>>& dy, MatrixRT<S>& dx, bool accumulate, VectorRT<S>* dw);

// What a quantized layer does between the steps of the forward pass, as model/runtime.h's
// LayerRuntime does in forward.cpp, with its reverse for training (RUQuant's fine-tuning of ω):
//   input(kind, x):         the rows a linear group reads (after the norm, the attention, SwiGLU),
//                           replaced in place (smoothing, rotation, fake quantization);
//   inputBackward(kind, dx): the gradient with respect to the replaced rows, turned in place into
//                           the gradient with respect to the rows before (fake quantization passes
//                           it straight through: STE);
//   qkv(q, k, v) / qkvBackward(dq, dk, dv): q and k after RoPE, v (per-head rotation, K/V
//                           quantization), and the reverse.
// The weight gradients are then those of the weights the linears hold (the transformed, fake-
// quantized ones). A hook may keep state between its forward and backward call: layerBackward
// recomputes the forward (calling the forward hooks again) right before its backward step.
// Empty functions are the identity.
template <typename S>
struct LayerHooks {
    std::function<void(LinearKind, MatrixRT<S>&)> input, inputBackward;
    std::function<void(MatrixRT<S>&, MatrixRT<S>&, MatrixRT<S>&)> qkv, qkvBackward;
};

// Decoder layer `layer` on in ([B·T, K], windows of T tokens from position 0) -> out; fills cache.
template <typename S>
void layerForward(const ModelConfig& cfg, const LayerParams<S>& p, int layer, const Eigen::Ref<const MatrixRT<S>>& in,
                  int T, MatrixRT<S>& out, LayerCache<S>& cache, const LayerHooks<S>* hooks = nullptr);
// Recomputes the layer forward on `in`, then back-propagates dOut ([B·T, K]) into dIn and adds
// the parameter gradients into g. dIn may alias dOut.
template <typename S>
void layerBackward(const ModelConfig& cfg, const LayerParams<S>& p, int layer, const Eigen::Ref<const MatrixRT<S>>& in,
                   int T, const MatrixRT<S>& dOut, MatrixRT<S>& dIn, LayerGrads<S>& g, LayerCache<S>& cache,
                   const LayerHooks<S>* hooks = nullptr);

// The loss between a student and a teacher, per row (token position) of the batch.
enum class DistillLoss {
    Kl,        // mean over rows of KL(teacher ‖ student) of the next-token distributions
    HiddenMse, // mean over rows and features of (student - teacher)² of the final normed hidden states
};

// The student as decoderLossAndGrad sees it: layers in S; embedding and lm_head frozen (borrowed).
template <typename S>
struct DecoderParams {
    const ModelConfig* config = nullptr;
    std::vector<LayerParams<S>> layers;
    VectorRT<S> finalNorm;
    const MatrixRT<S>* embedding = nullptr; // [V, K]
    const MatrixRT<S>* lmHead = nullptr;    // [V, K]
    // Loss Kl: the teacher's lm_head applied to the teacher's hidden states (null: the student's;
    // they differ when the student's head is stored in a narrower type).
    const MatrixRT<S>* teacherLmHead = nullptr;
};

struct DecoderGradOptions {
    DistillLoss loss = DistillLoss::Kl;
    bool normGains = false;       // also the gradients of every RMSNorm gain (layers and final)
    bool computeGrads = true;     // false: the loss only (one forward pass)
    Eigen::Index logitsChunk = 0; // rows per [chunk, V] logits block; 0: about 16M values
    // Checkpointing: the last layer's intermediates are kept from the forward pass, every other
    // layer's recomputed in its backward step, unless the intermediates of more of the last
    // layers fit in this many bytes (then those are kept too: less recompute, more memory).
    std::int64_t keepActivationsBytes = 0;
};

// Per layer gradients and the final norm's gain (normGains).
template <typename S>
struct DecoderGradsT {
    std::vector<LayerGrads<S>> layers;
    VectorRT<S> finalNorm;
};

// Loss of the student on token windows ids (B windows of T tokens) against the teacher's final
// normed hidden states teacherNormed ([B·T, K]: the rows the teacher's lm_head would read), and
// (computeGrads) its gradients added into grads (zeroGrads first). Frees nothing of the caller's.
// Loss KL uses both sides' logits through the (shared, frozen) lm_head, in double per row.
template <typename S>
Result<double> decoderLossAndGrad(const DecoderParams<S>& student, std::span<const std::int32_t> ids, int T,
                                  const Eigen::Ref<const MatrixRT<S>>& teacherNormed, const DecoderGradOptions& options,
                                  DecoderGradsT<S>& grads);

} // namespace qb::model
