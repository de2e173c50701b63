#include "model/model.h"

#include "model/runtime.h"

#include <algorithm>
#include <array>
#include <cassert>

namespace qb::model {

const char* linearName(Linear l)
{
    switch (l) {
    case Linear::Q: return "self_attn.q_proj";
    case Linear::K: return "self_attn.k_proj";
    case Linear::V: return "self_attn.v_proj";
    case Linear::O: return "self_attn.o_proj";
    case Linear::Gate: return "mlp.gate_proj";
    case Linear::Up: return "mlp.up_proj";
    case Linear::Down: return "mlp.down_proj";
    }
    return "?";
}

const char* linearKindName(LinearKind k)
{
    switch (k) {
    case LinearKind::Qkv: return "qkv";
    case LinearKind::O: return "o";
    case LinearKind::GateUp: return "gate_up";
    case LinearKind::Down: return "down";
    }
    return "?";
}

LinearKind linearKind(Linear l)
{
    switch (l) {
    case Linear::Q:
    case Linear::K:
    case Linear::V: return LinearKind::Qkv;
    case Linear::O: return LinearKind::O;
    case Linear::Gate:
    case Linear::Up: return LinearKind::GateUp;
    case Linear::Down: return LinearKind::Down;
    }
    return LinearKind::Qkv;
}

std::string tensorName(int layer, Linear l, bool bias)
{
    return "model.layers." + std::to_string(layer) + "." + linearName(l) + (bias ? ".bias" : ".weight");
}

RowVector& layerNorm(DecoderLayerWeights& w, LayerNorm n)
{
    switch (n) {
    case LayerNorm::Input: return w.inputNorm;
    case LayerNorm::Post: return w.postNorm;
    case LayerNorm::Q: return w.qNorm;
    case LayerNorm::K: return w.kNorm;
    case LayerNorm::AttnOut: return w.attnOutNorm;
    case LayerNorm::MlpOut: return w.mlpOutNorm;
    }
    return w.inputNorm;
}

const RowVector& layerNorm(const DecoderLayerWeights& w, LayerNorm n)
{
    return layerNorm(const_cast<DecoderLayerWeights&>(w), n); // same member, read only
}

FusedSlice fusedSlice(const ModelConfig& c, int layer, Linear l)
{
    if (!c.fusedProjections) return {tensorName(layer, l), 0, 0};
    const std::int64_t qd = c.numAttentionHeads * c.headDim, kvd = c.numKeyValueHeads * c.headDim;
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    switch (l) {
    case Linear::Q: return {p + "self_attn.qkv_proj.weight", 0, qd + 2 * kvd};
    case Linear::K: return {p + "self_attn.qkv_proj.weight", qd, qd + 2 * kvd};
    case Linear::V: return {p + "self_attn.qkv_proj.weight", qd + kvd, qd + 2 * kvd};
    case Linear::Gate: return {p + "mlp.gate_up_proj.weight", 0, 2 * c.intermediateSize};
    case Linear::Up: return {p + "mlp.gate_up_proj.weight", c.intermediateSize, 2 * c.intermediateSize};
    case Linear::O:
    case Linear::Down: break;
    }
    return {tensorName(layer, l), 0, 0};
}

namespace {

// The weight and bias members of each Linear, indexed by the enum.
struct LinearMembers {
    RowMatrix DecoderLayerWeights::* weight;
    RowVector DecoderLayerWeights::* bias;
};
using W = DecoderLayerWeights;
constexpr std::array<LinearMembers, 7> kLinearMembers = {{{&W::q, &W::qBias},
                                                          {&W::k, &W::kBias},
                                                          {&W::v, &W::vBias},
                                                          {&W::o, &W::oBias},
                                                          {&W::gate, &W::gateBias},
                                                          {&W::up, &W::upBias},
                                                          {&W::down, &W::downBias}}};
static_assert(kLinearMembers.size() == kAllLinears.size());

const LinearMembers& membersOf(Linear l)
{
    assert(std::size_t(l) < kLinearMembers.size());
    return kLinearMembers[std::size_t(l)];
}

} // namespace

RowMatrix& DecoderLayerWeights::weight(Linear l) { return this->*membersOf(l).weight; }
const RowMatrix& DecoderLayerWeights::weight(Linear l) const { return this->*membersOf(l).weight; }
RowVector& DecoderLayerWeights::bias(Linear l) { return this->*membersOf(l).bias; }
const RowVector& DecoderLayerWeights::bias(Linear l) const { return this->*membersOf(l).bias; }

std::size_t DecoderLayerWeights::bytes() const
{
    std::size_t n = std::size_t(inputNorm.size() + postNorm.size() + qNorm.size() + kNorm.size() + attnOutNorm.size() +
                                mlpOutNorm.size());
    std::size_t packedBytes = 0;
    for (Linear l : kAllLinears) {
        n += std::size_t(weight(l).size() + bias(l).size());
        if (const auto& p = packedWeight(l)) packedBytes += p->bytes();
    }
    return n * sizeof(float) + packedBytes;
}

bool DecoderLayerWeights::isPacked() const
{
    for (const auto& p : packed)
        if (p) return true;
    return false;
}

Eigen::Index DecoderLayerWeights::outFeatures(Linear l) const
{
    const auto& p = packedWeight(l);
    return p ? Eigen::Index(p->rows()) : weight(l).rows();
}

Eigen::Index DecoderLayerWeights::inFeatures(Linear l) const
{
    const auto& p = packedWeight(l);
    return p ? Eigen::Index(p->cols()) : weight(l).cols();
}

RowMatrix decodePacked(const PackedWeight& p)
{
    RowMatrix m(p.rows(), p.cols());
    // Row blocks in parallel: decoding is independent per row, and exact.
    const Eigen::Index block = 64, blocks = (m.rows() + block - 1) / block;
#pragma omp parallel for schedule(static)
    for (Eigen::Index b = 0; b < blocks; ++b) {
        const Eigen::Index r0 = b * block, n = std::min(block, m.rows() - r0);
        p.decodeRows(r0, n, m.row(r0).data());
    }
    return m;
}

std::shared_ptr<DecoderLayerWeights> unpackedCopy(const DecoderLayerWeights& w)
{
    auto out = std::make_shared<DecoderLayerWeights>(w);
    for (Linear l : kAllLinears)
        if (const auto& p = w.packedWeight(l)) {
            out->weight(l) = decodePacked(*p);
            out->packed[std::size_t(l)].reset();
        }
    return out;
}

std::shared_ptr<const DecoderLayerWeights> unpackedLayer(std::shared_ptr<const DecoderLayerWeights> w)
{
    if (!w || !w->isPacked()) return w;
    return unpackedCopy(*w);
}

namespace {

struct Shape {
    Eigen::Index rows, cols;
};

Shape linearShape(const ModelConfig& c, Linear l)
{
    const Eigen::Index K = c.hiddenSize, F = c.intermediateSize, qd = c.numAttentionHeads * c.headDim,
                       kvd = c.numKeyValueHeads * c.headDim;
    switch (l) {
    case Linear::Q: return {qd, K};
    case Linear::K:
    case Linear::V: return {kvd, K};
    case Linear::O: return {K, qd};
    case Linear::Gate:
    case Linear::Up: return {F, K};
    case Linear::Down: return {K, F};
    }
    return {0, 0};
}

bool hasBias(const ModelConfig& c, Linear l)
{
    switch (linearKind(l)) {
    case LinearKind::Qkv: return c.attentionBias;
    case LinearKind::O: return c.attentionOutputBias;
    case LinearKind::GateUp:
    case LinearKind::Down: return c.mlpBias;
    }
    return false;
}

std::string shapeText(Eigen::Index r, Eigen::Index c)
{
    std::string s = "[";
    s += std::to_string(r);
    s += ", ";
    s += std::to_string(c);
    s += "]";
    return s;
}

} // namespace

void DecoderLayerWeights::allocate(const ModelConfig& cfg)
{
    inputNorm.resize(cfg.hiddenSize);
    postNorm.resize(cfg.hiddenSize);
    qNorm.resize(cfg.qkNorm ? cfg.headDim : 0);
    kNorm.resize(cfg.qkNorm ? cfg.headDim : 0);
    attnOutNorm.resize(cfg.gemmaNorms ? cfg.hiddenSize : 0);
    mlpOutNorm.resize(cfg.gemmaNorms ? cfg.hiddenSize : 0);
    for (Linear l : kAllLinears) {
        const Shape s = linearShape(cfg, l);
        weight(l).resize(s.rows, s.cols);
        bias(l).resize(hasBias(cfg, l) ? s.rows : 0);
    }
}

Status DecoderLayerWeights::validate(const ModelConfig& cfg, int index) const
{
    const std::string prefix = "model.layers." + std::to_string(index) + ".";
    if (inputNorm.size() != cfg.hiddenSize)
        return makeError(ErrorCode::Shape, "norm weight has the wrong size", prefix + "input_layernorm.weight");
    if (postNorm.size() != cfg.hiddenSize)
        return makeError(ErrorCode::Shape, "norm weight has the wrong size",
                         prefix + layerNormName(cfg, LayerNorm::Post) + ".weight");
    const std::pair<const RowVector*, LayerNorm> optional[] = {{&qNorm, LayerNorm::Q},
                                                               {&kNorm, LayerNorm::K},
                                                               {&attnOutNorm, LayerNorm::AttnOut},
                                                               {&mlpOutNorm, LayerNorm::MlpOut}};
    for (const auto& [v, n] : optional) {
        const char* name = layerNormName(cfg, n);
        const Eigen::Index want = !name ? 0 : (n == LayerNorm::Q || n == LayerNorm::K) ? cfg.headDim : cfg.hiddenSize;
        if (v->size() != want)
            return makeError(ErrorCode::Shape,
                             "norm weight has " + std::to_string(v->size()) + " values, expected " +
                                 std::to_string(want),
                             prefix + (name ? name : "norm") + ".weight");
    }
    for (Linear l : kAllLinears) {
        const Shape s = linearShape(cfg, l);
        if (packedWeight(l) && weight(l).size() != 0)
            return makeError(ErrorCode::InvalidArgument, "held both packed and as F32", tensorName(index, l));
        if (outFeatures(l) != s.rows || inFeatures(l) != s.cols)
            return makeError(ErrorCode::Shape,
                             "expected shape " + shapeText(s.rows, s.cols) + ", got " +
                                 shapeText(outFeatures(l), inFeatures(l)),
                             tensorName(index, l));
        const Eigen::Index nb = bias(l).size();
        if (nb != 0 && nb != s.rows)
            return makeError(ErrorCode::Shape, "bias has the wrong size", tensorName(index, l, true));
        if (nb == 0 && hasBias(cfg, l)) return makeError(ErrorCode::Shape, "bias missing", tensorName(index, l, true));
    }
    if (runtime) {
        const std::string where = prefix + "runtime";
        for (LinearKind k : {LinearKind::Qkv, LinearKind::O, LinearKind::GateUp, LinearKind::Down}) {
            const Eigen::Index width = k == LinearKind::Qkv || k == LinearKind::GateUp ? cfg.hiddenSize
                                       : k == LinearKind::O ? cfg.numAttentionHeads * cfg.headDim
                                                            : cfg.intermediateSize;
            const InputRuntime& in = runtime->input(k);
            if (in.smoothDivisor.size() != 0 && in.smoothDivisor.size() != width)
                return makeError(ErrorCode::Shape,
                                 std::string("the ") + linearKindName(k) + " smoothing has " +
                                     std::to_string(in.smoothDivisor.size()) + " factors for an input of " +
                                     std::to_string(width),
                                 where);
            if (in.rotate && in.rotate->size() != width)
                return makeError(ErrorCode::Shape,
                                 std::string("the ") + linearKindName(k) + " rotation is " +
                                     std::to_string(in.rotate->size()) + " wide for an input of " +
                                     std::to_string(width),
                                 where);
        }
        if (runtime->kv.qkRotate && runtime->kv.qkRotate->size() != cfg.headDim)
            return makeError(ErrorCode::Shape,
                             "the q/k rotation is " + std::to_string(runtime->kv.qkRotate->size()) +
                                 " wide for a head dimension of " + std::to_string(cfg.headDim),
                             where);
    }
    return {};
}

Model::Model(ModelConfig config) : m_config(std::move(config))
{
    m_layers.resize(std::size_t(std::max<std::int64_t>(0, m_config.numHiddenLayers)));
}

Status Model::validate() const
{
    QB_TRY_STATUS(checkConfig(m_config));
    const auto& c = m_config;
    const auto cols = [](const RowMatrix& m, const PackedWeightPtr& p) {
        return p ? Eigen::Index(p->cols()) : m.cols();
    };
    if ((m_embeddingPacked && m_embedding.size() != 0) || (m_lmHeadPacked && m_lmHead.size() != 0))
        return makeError(ErrorCode::InvalidArgument, "embedding or head held both packed and as F32",
                         "model.embed_tokens.weight");
    if (embeddingRows() != c.vocabSize || cols(m_embedding, m_embeddingPacked) != c.hiddenSize)
        return makeError(ErrorCode::Shape, "expected shape " + shapeText(c.vocabSize, c.hiddenSize),
                         "model.embed_tokens.weight");
    if (m_finalNorm.size() != c.hiddenSize)
        return makeError(ErrorCode::Shape, "norm weight has the wrong size", "model.norm.weight");
    if (lmHeadRows() != c.vocabSize || cols(lmHead(), packedLmHead()) != c.hiddenSize)
        return makeError(ErrorCode::Shape, "expected shape " + shapeText(c.vocabSize, c.hiddenSize), "lm_head.weight");
    for (int i = 0; i < numLayers(); ++i) {
        if (!m_layers[std::size_t(i)])
            return makeError(ErrorCode::InvalidArgument, "decoder layer not loaded",
                             "model.layers." + std::to_string(i));
        QB_TRY_STATUS(m_layers[std::size_t(i)]->validate(c, i));
    }
    return {};
}

std::size_t Model::bytes() const
{
    std::size_t n = std::size_t(m_embedding.size() + m_finalNorm.size() + m_lmHead.size()) * sizeof(float);
    if (m_embeddingPacked) n += m_embeddingPacked->bytes();
    if (m_lmHeadPacked && !m_config.tieWordEmbeddings) n += m_lmHeadPacked->bytes();
    for (const auto& l : m_layers)
        if (l) n += l->bytes();
    return n;
}

bool Model::hasPacked() const
{
    if (m_embeddingPacked || packedLmHead()) return true;
    for (const auto& l : m_layers)
        if (l && l->isPacked()) return true;
    return false;
}

RowMatrix Model::embeddingF32() const { return m_embeddingPacked ? decodePacked(*m_embeddingPacked) : m_embedding; }

RowMatrix Model::lmHeadF32() const
{
    const PackedWeightPtr& p = packedLmHead();
    return p ? decodePacked(*p) : lmHead();
}

Eigen::Index Model::embeddingRows() const
{
    return m_embeddingPacked ? Eigen::Index(m_embeddingPacked->rows()) : m_embedding.rows();
}

Eigen::Index Model::lmHeadRows() const
{
    const PackedWeightPtr& p = packedLmHead();
    return p ? Eigen::Index(p->rows()) : lmHead().rows();
}

std::shared_ptr<const Model> unpackedModel(const Model& m)
{
    if (!m.hasPacked()) return std::shared_ptr<const Model>(std::shared_ptr<const Model>(), &m);
    auto out = std::make_shared<Model>(m);
    if (m.packedEmbedding()) {
        out->embedding() = m.embeddingF32();
        out->setPackedEmbedding(nullptr);
    }
    if (!m.config().tieWordEmbeddings && m.packedLmHead()) {
        out->lmHeadOwned() = m.lmHeadF32();
        out->setPackedLmHead(nullptr);
    }
    for (int l = 0; l < m.numLayers(); ++l)
        out->setLayer(l, unpackedLayer(m.layer(l)));
    return out;
}

Status checkConfig(const ModelConfig& c)
{
    auto bad = [](const std::string& what) { return makeError(ErrorCode::Unsupported, what, "config.json"); };
    if (c.vocabSize <= 0 || c.hiddenSize <= 0 || c.intermediateSize <= 0 || c.numHiddenLayers <= 0 ||
        c.numAttentionHeads <= 0 || c.numKeyValueHeads <= 0 || c.headDim <= 0)
        return bad("model dimensions must be positive");
    if (c.numAttentionHeads % c.numKeyValueHeads != 0)
        return bad("num_attention_heads must be a multiple of num_key_value_heads");
    if (c.headDim % 2 != 0) return bad("head_dim must be even for RoPE");
    if (!c.ropeScaling.type.empty() && c.ropeScaling.type != "llama3" && c.ropeScaling.type != "linear" &&
        c.ropeScaling.type != "default")
        return bad("rope_scaling type '" + c.ropeScaling.type + "' is not supported");
    if (c.rmsNormEps <= 0 || c.ropeTheta <= 0) return bad("rms_norm_eps and rope_theta must be positive");
    if (c.slidingWindow > 0 && std::int64_t(c.slidingLayers.size()) != c.numHiddenLayers)
        return bad("the sliding-window layer list does not have num_hidden_layers entries");
    return {};
}

} // namespace qb::model
