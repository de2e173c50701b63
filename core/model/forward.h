#pragma once
// Forward pass of a LLaMA-family decoder over a batch of token windows, one layer at a time.
//
// Activations are row-major [B·T, K] float matrices: window b occupies rows [b·T, (b+1)·T), every
// window starts at position 0 (RoPE positions 0..T-1) and attends causally within itself only.
// Steps follow Hugging Face modeling_llama exactly: embed -> per layer (RMSNorm, q/k/v (+bias),
// rotate-half RoPE (llama3/linear scaling), GQA causal softmax attention scaled by 1/sqrt(d),
// o_proj, residual, RMSNorm, SwiGLU MLP, residual) -> final RMSNorm -> lm_head. All F32 arithmetic;
// packed weights (model.h: BF16/F16 from the map, GGUF blocks, quantization codes) are decoded a
// tile of rows at a time inside each product, so a model is never expanded to F32 as a whole.
// Architecture variants are decided per layer from the config, never per token: Qwen3/Gemma 3
// per-head q/k RMSNorm before RoPE; Gemma embeddings x sqrt(hidden), attention scale
// 1/sqrt(query_pre_attn_scalar), attention/final logit soft-capping, RMSNorm of the attention
// and MLP outputs before each residual add, GeGLU (gelu tanh); sliding-window attention on the
// layers the config marks (Gemma 3's use rope_local_base_freq); Phi-3 runs as split Llama.
// Layer-at-a-time API: embed() -> runLayer() for l = 0..L-1 (in place) -> logits()/logProbs(),
// so a pipeline can run every calibration window through one layer before touching the next.
// Activation taps see the input of every linear layer while it is alive; nothing is retained.
// A layer with a runtime (DecoderLayerWeights::runtime, model/runtime.h) transforms and
// fake-quantizes each linear input group, and its keys/values per head, before use; taps then
// see the transformed rows, exactly what the linears multiply.
// Threading: GEMMs run on Eigen's OpenMP threads, attention and norms parallelise over
// windows × heads / rows with OpenMP (setNumThreads()). A Workspace holds the scratch buffers;
// use one Workspace per concurrent caller. Buffers are reused across calls: no allocation in inner
// loops, and none at all once shapes repeat.

#include "model/int8_product.h"
#include "model/model.h"

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

namespace qb::model {

// Called with the input of each linear layer: (layer, which input, [B·T, in] activations).
using ActivationTap = std::function<void(int layer, LinearKind which, const Eigen::Ref<const RowMatrix>& input)>;

// Threads for GEMM and the parallel loops (OpenMP); n <= 0 means all hardware threads.
void setNumThreads(int n);
int numThreads();

// Per-pair inverse frequencies (d/2 values) including rope_scaling, in double precision.
std::vector<double> ropeInverseFrequencies(const ModelConfig& cfg);

// RoPE cos/sin tables [T, d/2] and the parameters they were built for.
struct RopeTable {
    RowMatrix cos, sin;
    std::vector<double> key;
};

// Scratch buffers of the forward pass; contents are meaningless between calls.
struct Workspace {
    RowMatrix m_x, m_q, m_k, m_v, m_attn, m_proj, m_gate, m_up, m_logits;
    std::vector<RowMatrix> m_scores; // one [T, T] per thread
    std::array<RopeTable, 2> m_rope; // global layers, and Gemma 3's local (sliding) layers
    std::vector<RowMatrix> m_tiles;  // one decoded tile of a packed weight per thread
    ActivationCodes m_codes;         // the current linear input as codes (integer products)
};

// hidden = embed_tokens[ids]; rows = ids.size(). Fails on an id outside [0, vocab).
Status embed(const Model& model, std::span<const std::int32_t> ids, RowMatrix& hidden);

// Runs decoder layer `layer` of `model` in place on hidden ([B·T, K], T = seqLen).
Status runLayer(const Model& model, int layer, RowMatrix& hidden, int seqLen, Workspace& ws,
                const ActivationTap& taps = {});
// Same with explicit weights (e.g. a quantized substitute not installed in a Model); hidden may be
// a block of rows of a larger matrix (whole windows), updated in place without a copy.
Status runLayer(const ModelConfig& cfg, const DecoderLayerWeights& w, int layer, Eigen::Ref<RowMatrix> hidden,
                int seqLen, Workspace& ws, const ActivationTap& taps = {});

// Partial layer runs, for true-sequential quantization, where each linear's input must be computed
// with the earlier linears already replaced, and nothing past it is needed. A decoder layer is
//   Attention block: hidden += o(attention(rope(q, k, v)(inputNorm(hidden))))   taps Qkv, O
//   Mlp block:       hidden += down(silu(gate(x)) * up(x)), x = postNorm(hidden) taps GateUp, Down
// and runLayer() is Attention then Mlp, with the same arithmetic. With stopAt (a kind of that
// block) the block ends right after tapping stopAt's input: that linear, the rest of the block and
// its residual add are skipped, and hidden is left untouched.
enum class LayerBlock { Attention, Mlp };
Status runLayerBlock(const ModelConfig& cfg, const DecoderLayerWeights& w, int layer, LayerBlock block,
                     Eigen::Ref<RowMatrix> hidden, int seqLen, Workspace& ws, const ActivationTap& taps = {},
                     std::optional<LinearKind> stopAt = std::nullopt);
// The rest of a block given the input of its last linear, e.g. kept from a run stopped there:
// Attention: hidden += o(input), input [rows, heads·d]; Mlp: hidden += down(input), [rows, I].
Status addBlockOutput(const ModelConfig& cfg, const DecoderLayerWeights& w, int layer, LayerBlock block,
                      const Eigen::Ref<const RowMatrix>& input, Eigen::Ref<RowMatrix> hidden, Workspace& ws);

// embed() then runLayer() for every layer: hidden [B·T, K] after the last decoder layer.
Status runDecoder(const Model& model, std::span<const std::int32_t> ids, int seqLen, RowMatrix& hidden, Workspace& ws,
                  const ActivationTap& taps = {});

// Final norm + lm_head for every row: logits [rows, V]. `hidden` is left untouched.
void logits(const Model& model, const Eigen::Ref<const RowMatrix>& hidden, RowMatrix& out, Workspace& ws);

// Scored positions of a batch: [firstScored, T-1) of every window, window-major; scored row s
// reads hidden row scoredHiddenRow(s) and predicts ids[scoredHiddenRow(s) + 1].
inline Eigen::Index scoredHiddenRow(Eigen::Index s, int seqLen, int firstScored)
{
    const Eigen::Index perWindow = seqLen - 1 - firstScored;
    return (s / perWindow) * seqLen + firstScored + s % perWindow;
}
// Scored rows per logits chunk, so that a [chunk, V] buffer stays near 64 MB whatever the batch.
Eigen::Index logitsChunkRows(const Model& model, Eigen::Index scoredRows);
// Logits of scored rows [begin, begin + count) into out [count, V] (ws.m_proj gathers the rows).
void scoredLogits(const Model& model, const Eigen::Ref<const RowMatrix>& hidden, int seqLen, int firstScored,
                  Eigen::Index begin, Eigen::Index count, RowMatrix& out, Workspace& ws);

// Log-softmax of one row of logits as logProbs() computes it, in double after the float logits:
// the max (and its first index), logSum = log Σ exp(l_j - max), log p_j = l_j - max - logSum.
struct RowLogSoftmax {
    float max = 0;
    Eigen::Index argmax = 0;
    double logSum = 0;
    double logProbDouble(float l) const { return (double(l) - double(max)) - logSum; }
    float logProb(float l) const { return float(logProbDouble(l)); }
};
RowLogSoftmax rowLogSoftmax(std::span<const float> logits);

// Next-token log-probabilities without materialising all logits at once: for every window b and
// position t in [firstScored, T-1), out[b·(T-1-firstScored) + t-firstScored] =
// log softmax(logits(b,t))[ids[b·T + t + 1]]. ids are the window tokens that produced hidden.
Status logProbs(const Model& model, const Eigen::Ref<const RowMatrix>& hidden, int seqLen,
                std::span<const std::int32_t> ids, int firstScored, std::vector<float>& out, Workspace& ws);

// Whole forward pass: logits [B·T, V] for ids (B windows of seqLen tokens).
Result<RowMatrix> forwardLogits(const Model& model, std::span<const std::int32_t> ids, int seqLen, Workspace& ws,
                                const ActivationTap& taps = {});

} // namespace qb::model
