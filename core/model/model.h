#pragma once
// Model: the weights of a LLaMA-family decoder (LLaMA, Qwen2, Mistral, Qwen3, Gemma 2/3, Phi-3) in
// F32 Eigen matrices.
//
// Layout: every linear weight is a row-major [out, in] matrix exactly as Hugging Face stores it,
// so y = x·Wᵀ is `x * W.transpose()` with activations as row-major [tokens, features]. Biases and
// norm weights are row vectors. Weights are grouped per decoder layer (DecoderLayerWeights) and
// held through shared_ptr, so a pipeline can swap one layer for its quantized version, or load
// and drop layers one at a time, without touching the others (a missing layer is nullptr).
// A linear weight, the embedding or the head may instead be held compactly (base/packed_weight.h:
// BF16/F16 rows straight from the memory map, GGUF blocks, quantization codes): its F32 matrix is
// then empty and the forward pass decodes it per tile. Code that needs F32 values asks for them
// (unpackedLayer, embeddingF32, lmHeadF32): one layer at a time, never the whole model.
// Norm weights are the effective multipliers: Gemma's (1 + w) is stored as 1 + w, so the forward
// pass has one RMSNorm for every architecture. Phi-3's fused qkv_proj/gate_up_proj are split
// into q, k, v and gate, up when loaded (row blocks, in that order).
// Threading: a Model is not synchronised; mutate it (setLayer) only while no forward pass runs.
// Reading it from several threads at once is fine. Pure std + Eigen.

#include "base/model_config.h"
#include "base/packed_weight.h"
#include "base/result.h"

#include <Eigen/Core>

#include <array>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace qb::model {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowVector = Eigen::Matrix<float, 1, Eigen::Dynamic>;

// The seven linear layers of a decoder layer.
enum class Linear { Q, K, V, O, Gate, Up, Down };
inline constexpr std::array<Linear, 7> kAllLinears = {Linear::Q,    Linear::K,  Linear::V,   Linear::O,
                                                      Linear::Gate, Linear::Up, Linear::Down};
// Hugging Face sub-module name, e.g. "self_attn.q_proj".
const char* linearName(Linear l);

// Which input a linear layer reads: q/k/v share the attention-norm output, gate/up share the
// MLP-norm output. This is what activation taps report.
enum class LinearKind { Qkv, O, GateUp, Down };
const char* linearKindName(LinearKind k);
LinearKind linearKind(Linear l);

struct LayerRuntime; // model/runtime.h

struct DecoderLayerWeights {
    RowVector inputNorm; // [K] attention input norm (input_layernorm)
    RowVector postNorm;  // [K] MLP input norm (post_attention_layernorm; Gemma: pre_feedforward_layernorm)
    // Empty unless the architecture has them: per-head q/k norms [d] (Qwen3, Gemma 3); norms of
    // the attention and MLP outputs before the residual add [K] (Gemma: post_attention_layernorm,
    // post_feedforward_layernorm).
    RowVector qNorm, kNorm, attnOutNorm, mlpOutNorm;
    RowMatrix q, k, v;  // [H·d, K], [H_kv·d, K], [H_kv·d, K]
    RowMatrix o;        // [K, H·d]
    RowMatrix gate, up; // [F, K]
    RowMatrix down;     // [K, F]
    // Empty (size 0) when the architecture has no such bias.
    RowVector qBias, kBias, vBias, oBias, gateBias, upBias, downBias;
    // Online activation transforms and quantizers (model/runtime.h) matching how these weights
    // were transformed offline; null: none. Immutable and shared by copies of the layer.
    std::shared_ptr<const LayerRuntime> runtime;
    // Set: linear l is held compactly (weight(l) is empty); indexed by Linear.
    std::array<PackedWeightPtr, 7> packed;

    const PackedWeightPtr& packedWeight(Linear l) const { return packed[std::size_t(l)]; }
    bool isPacked() const;
    // Rows and columns of linear l, packed or not.
    Eigen::Index outFeatures(Linear l) const;
    Eigen::Index inFeatures(Linear l) const;
    RowMatrix& weight(Linear l);
    const RowMatrix& weight(Linear l) const;
    RowVector& bias(Linear l);
    const RowVector& bias(Linear l) const;
    std::size_t bytes() const; // F32 matrices, plus what packed weights hold
    // Allocates every matrix with the shapes `cfg` implies (contents uninitialised).
    void allocate(const ModelConfig& cfg);
    // Checks every shape against `cfg`; the message names layer `index` and the tensor.
    Status validate(const ModelConfig& cfg, int index) const;
};

// The layer with every packed weight decoded into its F32 matrix: `w` itself when nothing is
// packed, else a copy (packed views dropped; runtime shared).
std::shared_ptr<const DecoderLayerWeights> unpackedLayer(std::shared_ptr<const DecoderLayerWeights> w);
// A modifiable F32 copy of `w` (packed weights decoded).
std::shared_ptr<DecoderLayerWeights> unpackedCopy(const DecoderLayerWeights& w);
// p decoded into a [rows, cols] F32 matrix.
RowMatrix decodePacked(const PackedWeight& p);

// "model.layers.<layer>.self_attn.q_proj.weight" etc.
std::string tensorName(int layer, Linear l, bool bias = false);

// The norm vector of `w` for a norm kind (base/model_config.h names them).
using qb::LayerNorm;
using qb::layerNormName;
RowVector& layerNorm(DecoderLayerWeights& w, LayerNorm n);
const RowVector& layerNorm(const DecoderLayerWeights& w, LayerNorm n);
// Phi-3's fused tensors: the HF name of the tensor holding `l` and the first row of `l` in it
// (q, k, v in qkv_proj; gate, up in gate_up_proj). Without fused projections: tensorName, row 0.
struct FusedSlice {
    std::string name;
    std::int64_t firstRow = 0;
    std::int64_t fusedRows = 0;
};
FusedSlice fusedSlice(const ModelConfig& cfg, int layer, Linear l);

class Model {
public:
    explicit Model(ModelConfig config);

    const ModelConfig& config() const { return m_config; }
    int numLayers() const { return int(m_layers.size()); }

    // F32 embedding [V, K]; empty when it is packed.
    RowMatrix& embedding() { return m_embedding; }
    const RowMatrix& embedding() const { return m_embedding; }
    // Packed embedding / head (set one or the other form, not both); the head is the embedding's
    // when tie_word_embeddings is set.
    const PackedWeightPtr& packedEmbedding() const { return m_embeddingPacked; }
    void setPackedEmbedding(PackedWeightPtr p) { m_embeddingPacked = std::move(p); }
    const PackedWeightPtr& packedLmHead() const
    {
        return m_config.tieWordEmbeddings ? m_embeddingPacked : m_lmHeadPacked;
    }
    void setPackedLmHead(PackedWeightPtr p) { m_lmHeadPacked = std::move(p); }
    // F32 copies (decoded when packed).
    RowMatrix embeddingF32() const;
    RowMatrix lmHeadF32() const;
    // Rows of the embedding (= vocabulary) and of the head, packed or not.
    Eigen::Index embeddingRows() const;
    Eigen::Index lmHeadRows() const;
    RowVector& finalNorm() { return m_finalNorm; } // [K]
    const RowVector& finalNorm() const { return m_finalNorm; }
    // [V, K]; the embedding when tie_word_embeddings is set (then lmHeadOwned() stays empty).
    const RowMatrix& lmHead() const { return m_config.tieWordEmbeddings ? m_embedding : m_lmHead; }
    RowMatrix& lmHeadOwned() { return m_lmHead; }

    std::shared_ptr<const DecoderLayerWeights> layer(int i) const { return m_layers.at(i); }
    void setLayer(int i, std::shared_ptr<const DecoderLayerWeights> weights) { m_layers.at(i) = std::move(weights); }

    // Shapes of everything present (and that every layer is present).
    Status validate() const;
    std::size_t bytes() const; // F32 matrices, plus what packed weights hold
    // Whether anything (embedding, head, a linear of a loaded layer) is packed.
    bool hasPacked() const;

private:
    ModelConfig m_config;
    RowMatrix m_embedding;
    RowVector m_finalNorm;
    RowMatrix m_lmHead;
    PackedWeightPtr m_embeddingPacked, m_lmHeadPacked;
    std::vector<std::shared_ptr<const DecoderLayerWeights>> m_layers;
};

// `m` with everything decoded to F32: `m` itself (not owned) when nothing is packed, else a copy.
// For whole-model F32 work (distillation's backward pass).
std::shared_ptr<const Model> unpackedModel(const Model& m);

// Checks that a config describes a decoder this module can run (positive sizes, H % H_kv == 0,
// even head_dim, supported rope scaling).
Status checkConfig(const ModelConfig& cfg);

} // namespace qb::model
