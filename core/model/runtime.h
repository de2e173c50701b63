#pragma once
// Runtime (online) transforms and activation quantizers of one decoder layer: what a
// weight-and-activation scheme (W8A8, W4A4 + SmoothQuant, QuaRot-style Hadamard, RUQuant) does to
// activations while the model runs, next to weights that were transformed offline to match.
//
// Per linear input group (LinearKind: qkv, o, gate_up, down) the forward pass applies, in order,
// to the activation rows x that the group's linears read:
//   1. smoothing:  x_j <- x_j / s_j               (SmoothQuant where no fold is exact, e.g. GQA o_proj)
//   2. rotation:   x   <- x · T                   (an orthogonal RowTransform, e.g. online Hadamard)
//   3. fake quant: x   <- dequant(quant(x))       (ActQuantSpec: per token or per tensor)
// and the group's weights hold the matching offline transform (W · diag(s) · T), so y = x Wᵀ is
// unchanged in exact arithmetic when quantization is off. Activation taps report the row data
// after all three steps: exactly what the linears multiply.
// K/V quantization (KvRuntime) works per (head, token) vector of head_dim values on the keys after
// RoPE (and after the optional per-head rotation of q and k, which cancels in QKᵀ) and on the
// values (and on the queries, when asked); the attention probabilities are never quantized.
// Quantizer convention (METHODS.md §0, QuaRot's ActQuantizer): the range always holds 0
// (lo = clip·min(min x, 0), hi = clip·max(max x, 0)); asymmetric: s = (hi - lo) / (2^b - 1), integer
// zero-point Z = round(-lo / s), codes clamp(round(x / s) + Z, 0, 2^b - 1), value s·(code - Z);
// symmetric: s = max(|lo|, hi) / (2^(b-1) - 1), codes clamp(round(x / s), -2^(b-1), 2^(b-1) - 1).
// Rounding half to even (std::nearbyint). A zero range leaves the row unchanged.
// Threading: everything here is immutable once built and shared between layers' copies
// (shared_ptr<const>); the kernels parallelise over rows with OpenMP. Pure std + Eigen.

#include "model/model.h"

#include <Eigen/Core>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace qb::model {

// An orthogonal map applied to activation rows in place (x <- x·T for every row).
class RowTransform {
public:
    virtual ~RowTransform() = default;
    virtual Eigen::Index size() const = 0;
    virtual void apply(Eigen::Ref<RowMatrix> rows) const = 0;
    // x <- x·Tᵀ (= x·T⁻¹ for an orthogonal T): gradients through the transform, and undoing it.
    // The default multiplies by dense()ᵀ (O(n²) per row); structured transforms override it.
    virtual void applyTranspose(Eigen::Ref<RowMatrix> rows) const;
    // Short label for reports and the transform lab, e.g. "Hadamard 352 (44 x 8), seed 0".
    virtual std::string describe() const = 0;
    // T itself ([size, size], T = apply(I)): for folding into weights and for tests.
    RowMatrix dense() const;
};

// A transform held as its matrix (x <- x·T by GEMM): learned or greedy rotations once
// materialised (RUQuant's R, SpinQuant), and tests. Orthogonality is the caller's promise.
class DenseRowTransform : public RowTransform {
public:
    DenseRowTransform(RowMatrix t, std::string label) : m_t(std::move(t)), m_label(std::move(label)) {}
    Eigen::Index size() const override { return m_t.rows(); }
    void apply(Eigen::Ref<RowMatrix> rows) const override;
    void applyTranspose(Eigen::Ref<RowMatrix> rows) const override;
    std::string describe() const override { return m_label; }
    const RowMatrix& matrix() const { return m_t; }

private:
    RowMatrix m_t;
    std::string m_label;
};

enum class ActGranularity { PerToken, PerTensor };

struct ActQuantSpec {
    ActQuantSpec() = default;
    ActQuantSpec(int b, bool s, float c, ActGranularity g = ActGranularity::PerToken)
        : bits(b), sym(s), clip(c), granularity(g)
    {}
    int bits = 0; // 0: off (activations stay F32)
    bool sym = false;
    float clip = 1.0f; // the range is multiplied by this ratio (RUQuant's lac)
    ActGranularity granularity = ActGranularity::PerToken;
    // Static mode: a fixed [min, max] from calibration, instead of the range of the data at hand.
    std::optional<std::array<float, 2>> staticRange;
    bool enabled() const { return bits > 0; }
    bool operator==(const ActQuantSpec&) const = default;
};

struct InputRuntime {
    RowVector smoothDivisor;                    // empty: no online smoothing
    std::shared_ptr<const RowTransform> rotate; // null: none
    ActQuantSpec quant;
    bool empty() const { return smoothDivisor.size() == 0 && !rotate && !quant.enabled(); }
};

struct KvRuntime {
    // Per (head, token) vector, granularity ignored: k and v (QuaRot's KV cache), q as well for
    // schemes that quantize both inputs of QKᵀ (RUQuant); q and k after RoPE and qkRotate.
    ActQuantSpec q, k, v;
    std::shared_ptr<const RowTransform> qkRotate; // [head_dim]: applied to every head of q and k after RoPE
    bool empty() const { return !q.enabled() && !k.enabled() && !v.enabled() && !qkRotate; }
};

struct LayerRuntime {
    std::array<InputRuntime, 4> inputs; // indexed by LinearKind
    KvRuntime kv;
    InputRuntime& input(LinearKind k) { return inputs[std::size_t(k)]; }
    const InputRuntime& input(LinearKind k) const { return inputs[std::size_t(k)]; }
    bool empty() const;
    // Online transforms that a plain weights file (GGUF, safetensors) cannot hold: smoothing
    // divisors and rotations (not the quantizers), as "o: Hadamard 128; down: smoothing" or "".
    std::string onlineTransforms() const;
};

// The quantizer of one range [lo, hi] (0 included; the convention above) and its application to
// n values in place (vectorised: rint() rounds half to even, as std::nearbyint). scale 0: a zero
// range, values left unchanged.
struct RangeQuantizer {
    float scale = 0, invScale = 0, zero = 0, qmin = 0, qmax = 0;
    RangeQuantizer(float lo, float hi, const ActQuantSpec& spec);
    void apply(float* x, Eigen::Index n) const;
};

// Fake-quantizes rows in place: each row alone (PerToken) or all of them with one range
// (PerTensor, or a static range).
void fakeQuantizeActivations(Eigen::Ref<RowMatrix> rows, const ActQuantSpec& spec);
// The same on every `width`-wide segment of every row separately (K/V per head and token).
void fakeQuantizeSegments(Eigen::Ref<RowMatrix> rows, Eigen::Index width, const ActQuantSpec& spec);
// Applies smoothing, rotation and quantization of `in` to rows, in place.
void applyInputRuntime(Eigen::Ref<RowMatrix> rows, const InputRuntime& in);
// The same without the quantizer: smoothing and rotation only.
void applyInputTransforms(Eigen::Ref<RowMatrix> rows, const InputRuntime& in);
// Applies t to every `t.size()`-wide segment of every row (per-head rotations).
void applySegments(Eigen::Ref<RowMatrix> rows, const RowTransform& t);

} // namespace qb::model
