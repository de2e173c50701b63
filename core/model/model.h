#pragma once
// Model: the weights of a LLaMA-family decoder (LLaMA, Qwen2, Mistral) in F32 Eigen matrices.
//
// Layout: every linear weight is a row-major [out, in] matrix exactly as Hugging Face stores it,
// so y = x·Wᵀ is `x * W.transpose()` with activations as row-major [tokens, features]. Biases and
// norm weights are row vectors. Weights are grouped per decoder layer (DecoderLayerWeights) and
// held through shared_ptr, so a pipeline can swap one layer for its quantized version, or load
// and drop layers one at a time, without touching the others (a missing layer is nullptr).
// Threading: a Model is not synchronised; mutate it (setLayer) only while no forward pass runs.
// Reading it from several threads at once is fine. Pure std + Eigen.

#include "base/model_config.h"
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

struct DecoderLayerWeights {
    RowVector inputNorm; // [K]
    RowVector postNorm;  // [K]
    RowMatrix q, k, v;   // [H·d, K], [H_kv·d, K], [H_kv·d, K]
    RowMatrix o;         // [K, H·d]
    RowMatrix gate, up;  // [F, K]
    RowMatrix down;      // [K, F]
    // Empty (size 0) when the architecture has no such bias.
    RowVector qBias, kBias, vBias, oBias, gateBias, upBias, downBias;

    RowMatrix& weight(Linear l);
    const RowMatrix& weight(Linear l) const;
    RowVector& bias(Linear l);
    const RowVector& bias(Linear l) const;
    std::size_t bytes() const;
    // Allocates every matrix with the shapes `cfg` implies (contents uninitialised).
    void allocate(const ModelConfig& cfg);
    // Checks every shape against `cfg`; the message names layer `index` and the tensor.
    Status validate(const ModelConfig& cfg, int index) const;
};

// "model.layers.<layer>.self_attn.q_proj.weight" etc.
std::string tensorName(int layer, Linear l, bool bias = false);

class Model {
public:
    explicit Model(ModelConfig config);

    const ModelConfig& config() const { return m_config; }
    int numLayers() const { return int(m_layers.size()); }

    RowMatrix& embedding() { return m_embedding; } // [V, K]
    const RowMatrix& embedding() const { return m_embedding; }
    RowVector& finalNorm() { return m_finalNorm; } // [K]
    const RowVector& finalNorm() const { return m_finalNorm; }
    // [V, K]; the embedding when tie_word_embeddings is set (then lmHeadOwned() stays empty).
    const RowMatrix& lmHead() const { return m_config.tieWordEmbeddings ? m_embedding : m_lmHead; }
    RowMatrix& lmHeadOwned() { return m_lmHead; }

    std::shared_ptr<const DecoderLayerWeights> layer(int i) const { return m_layers.at(i); }
    void setLayer(int i, std::shared_ptr<const DecoderLayerWeights> weights) { m_layers.at(i) = std::move(weights); }

    // Shapes of everything present (and that every layer is present).
    Status validate() const;
    std::size_t bytes() const;

private:
    ModelConfig m_config;
    RowMatrix m_embedding;
    RowVector m_finalNorm;
    RowMatrix m_lmHead;
    std::vector<std::shared_ptr<const DecoderLayerWeights>> m_layers;
};

// Checks that a config describes a decoder this module can run (positive sizes, H % H_kv == 0,
// even head_dim, supported rope scaling).
Status checkConfig(const ModelConfig& cfg);

} // namespace qb::model
